#include "bench_load.h"

#include <ATen/Parallel.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "bench_process.h"
#include "volt/models/gpt.h"
#include "volt/torch_compat.h"
#include "volt/volt.h"

namespace volt::tools {
namespace {

using nlohmann::json;

struct LoadBenchArgs {
  std::string model = "gpt2-xl";
  std::string precision = "bf16-true";
  std::string format = "ckpt";
  std::string file;  // default: a checkpoint made once by `volt save-model` in the temp directory
  std::vector<std::string> modes;
  int repeat = 1;
  int threads = static_cast<int>(std::thread::hardware_concurrency());
  std::string python = default_python();
};

const std::vector<std::string> kVoltModes{"naive", "volt", "floor_read"};
// Measured in Python (torch 2.x and Lightning from the test venv) on the same file and GPT shape.
const std::vector<std::string> kPeerModes{"pytorch_naive", "lightning_empty_init",
                                          "lightning_load_from_checkpoint"};

std::vector<std::string> all_modes() {
  auto modes = kVoltModes;
  modes.insert(modes.end(), kPeerModes.begin(), kPeerModes.end());
  return modes;
}

bool is_peer_mode(const std::string& mode) {
  return std::find(kPeerModes.begin(), kPeerModes.end(), mode) != kPeerModes.end();
}

// Reads the file (in the page cache) into fresh huge-page memory from all of volt's init threads, as
// DESIGN §6 defines floor_read: the copy any loader that does not map the file pays at least. On the
// threads volt's fills run on, so that on either LibTorch leg it measures the memory, not parallel_for.
double floor_read_seconds(const std::string& path, int64_t* bytes) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  VOLT_CHECK(fd >= 0, "cannot open ", path);
  const off_t size = ::lseek(fd, 0, SEEK_END);
  VOLT_CHECK(size > 0, "floor_read: ", path, " is empty or unreadable");
  const auto length = static_cast<size_t>(size);
  const double start = now_seconds();
  void* memory = mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  VOLT_CHECK(memory != MAP_FAILED, "floor_read could not map ", length, " bytes");
  madvise(memory, length, MADV_HUGEPAGE);
  auto* data = static_cast<char*>(memory);
  std::atomic<int64_t> read_bytes{0};
  run_on_init_threads(static_cast<int64_t>(length), [&](int64_t begin, int64_t end) {
    while (begin < end) {
      const ssize_t n = ::pread(fd, data + begin, static_cast<size_t>(end - begin), begin);
      VOLT_CHECK(n > 0, "floor_read: reading ", path, " at byte ", begin, " failed");
      begin += n;
      read_bytes += n;
    }
  });
  const double seconds = now_seconds() - start;
  munmap(memory, length);
  ::close(fd);
  *bytes = read_bytes;
  return seconds;
}

// Touches one byte per page of every parameter, so that a lazily mapped load pays for its page faults
// inside the measurement.
int64_t touch(torch::nn::Module& module) {
  int64_t sum = 0;
  for (const auto& p : volt::unique_parameters(module)) {
    const auto* data = static_cast<const volatile unsigned char*>(p.data_ptr());
    const int64_t bytes = p.numel() * static_cast<int64_t>(p.element_size());
    for (int64_t i = 0; i < bytes; i += 4096) sum += data[i];
  }
  return sum;
}

json run_child(const LoadBenchArgs& args, const std::string& mode) {
  at::set_num_threads(args.threads);
  const auto config = models::GPTConfig::preset(args.model);
  const Precision precision(args.precision);
  json row{{"threads", at::get_num_threads()}, {"torch_version", compat::torch_version()}};
  if (mode == "floor_read") {
    int64_t bytes = 0;
    row["seconds"] = floor_read_seconds(args.file, &bytes);
    row["file_bytes"] = bytes;
  } else if (mode == "naive") {
    // What LibTorch code does today: float32 build with the serial generator, the whole file in memory,
    // a copy into the module, then the cast to the target precision.
    const double start = now_seconds();
    models::GPT model(config);
    Value contents;
    {
      auto reader = CheckpointReader::open(args.file);
      Value flat = Value::dict(true);
      const Value& sd = reader->contents().is_dict() && reader->contents().to_dict().contains("state_dict")
                            ? reader->contents()["state_dict"]
                            : reader->contents();
      for (const auto& [key, value] : sd.to_dict()) flat.to_dict().set(key, value.to_tensor().clone());
      contents = flat;
    }
    const auto report = load_state_dict(*model, contents, LoadOptions().zero_copy(false));
    contents = Value();
    model->to(precision.param_dtype());
    row["seconds"] = now_seconds() - start;
    row["loaded"] = report.loaded.size();
    row["touch_sum"] = touch(*model);
  } else if (mode == "volt") {
    const double start = now_seconds();
    Trainer trainer(TrainerOptions().accelerator("cpu").precision(precision));
    models::GPT model{nullptr};
    {
      auto scope = trainer.init_module(/*empty_init=*/true);
      model = models::GPT(config);
    }
    const double built = now_seconds();
    auto reader = CheckpointReader::open(args.file);
    const auto report = load_state_dict(*model, reader->contents());
    const double loaded = now_seconds();
    row["touch_sum"] = touch(*model);
    row["seconds"] = now_seconds() - start;
    row["build_seconds"] = built - start;
    row["load_seconds_before_touch"] = loaded - built;
    row["loaded"] = report.loaded.size();
    row["zero_copy"] = report.zero_copy.size();
    VOLT_CHECK(report.complete(), "the checkpoint does not match the model: ", report.summary());
  } else {
    VOLT_FAIL("unknown mode ", mode);
  }
  row["peak_rss_bytes"] = peak_rss_bytes();
  row["model_bytes"] =
      config.parameter_count() * static_cast<int64_t>(c10::elementSize(precision.param_dtype()));
  return row;
}

std::string default_file(const LoadBenchArgs& args) {
  return (std::filesystem::temp_directory_path() /
          ("volt-bench-" + args.model + "-" + args.precision + "." + args.format))
      .string();
}

std::vector<std::string> common_options(const LoadBenchArgs& args) {
  return {"--model",   args.model, "--precision", args.precision, "--format",
          args.format, "--file",   args.file,     "--threads",    std::to_string(args.threads)};
}

void run_parent(LoadBenchArgs args) {
  if (args.file.empty()) args.file = default_file(args);
  if (!std::filesystem::exists(args.file)) {
    std::fprintf(stderr, "bench load: writing %s with `volt save-model` (once)\n", args.file.c_str());
    const auto made = run_process(
        {self_executable(), "save-model", "--model", args.model, "--precision", args.precision, args.file});
    VOLT_CHECK(made.exit_code == 0, "could not write the benchmark checkpoint ", args.file);
  }
  auto modes = args.modes.empty() ? all_modes() : args.modes;
  // Warm the page cache first: every mode then reads from memory, as the floor does.
  int64_t bytes = 0;
  floor_read_seconds(args.file, &bytes);
  std::map<std::string, json> rows;
  for (const auto& mode : modes) {
    if (is_peer_mode(mode) && access(args.python.c_str(), X_OK) != 0) {
      rows[mode] =
          json{{"skipped", "no Python at " + args.python + ": run scripts/install-deps.sh or pass --python"}};
      continue;
    }
    if (mode == "lightning_load_from_checkpoint" && args.format != "ckpt") {
      rows[mode] = json{{"skipped", "Lightning's load_from_checkpoint reads .ckpt files only"}};
      continue;
    }
    std::vector<json> runs;
    for (int r = 0; r < args.repeat; ++r) {
      std::vector<std::string> command{self_executable(), "bench", "load-child", "--mode", mode};
      if (is_peer_mode(mode)) command = {args.python, peer_script("load_peer.py"), "--mode", mode};
      const auto options = common_options(args);
      command.insert(command.end(), options.begin(), options.end());
      const auto result = run_process(command);
      const auto brace = result.output.rfind('{');
      VOLT_CHECK(result.exit_code == 0 && brace != std::string::npos, "mode ", mode, " failed (exit ",
                 result.exit_code, ")");
      runs.push_back(json::parse(result.output.substr(brace)));
    }
    std::sort(runs.begin(), runs.end(), [](const json& a, const json& b) {
      return a["seconds"].get<double>() < b["seconds"].get<double>();
    });
    json row = runs[runs.size() / 2];
    int64_t rss = 0;
    for (const auto& r : runs) rss = std::max(rss, r["peak_rss_bytes"].get<int64_t>());
    row["peak_rss_bytes"] = rss;
    row["repeats"] = runs.size();
    rows[mode] = row;
  }
  std::fprintf(stderr, "%-22s %10s %14s %12s %12s %14s\n", "mode", "seconds", "peak_rss_MB", "vs_naive",
               "vs_floor", "rss/model");
  for (const auto& mode : modes) {
    json row{{"bench", "load"},       {"mode", mode},
             {"model", args.model},   {"precision", args.precision},
             {"format", args.format}, {"file", args.file}};
    row.update(rows[mode]);
    if (row.contains("skipped")) {
      std::cout << row.dump() << std::endl;
      std::fprintf(stderr, "%-22s skipped: %s\n", mode.c_str(), row["skipped"].get<std::string>().c_str());
      continue;
    }
    const double seconds = row["seconds"].get<double>();
    if (rows.count("naive")) row["speedup_vs_naive"] = rows["naive"]["seconds"].get<double>() / seconds;
    if (rows.count("floor_read"))
      row["ratio_to_floor_read"] = seconds / rows["floor_read"]["seconds"].get<double>();
    row["rss_ratio_to_model_bytes"] = row["peak_rss_bytes"].get<double>() / row["model_bytes"].get<double>();
    std::cout << row.dump() << std::endl;
    std::fprintf(stderr, "%-22s %10.3f %14.1f %12.2f %12.2f %14.3f\n", mode.c_str(), seconds,
                 row["peak_rss_bytes"].get<double>() / 1e6, row.value("speedup_vs_naive", 0.0),
                 row.value("ratio_to_floor_read", 0.0), row["rss_ratio_to_model_bytes"].get<double>());
  }
}

void add_options(CLI::App& command, LoadBenchArgs& args) {
  command.add_option("--model", args.model, "GPT shape")
      ->check(CLI::IsMember(models::GPTConfig::preset_names()))
      ->capture_default_str();
  command.add_option("--precision", args.precision, "Lightning precision string")
      ->check(CLI::IsMember(Precision::valid_names()))
      ->capture_default_str();
  command.add_option("--format", args.format, "ckpt or safetensors")
      ->check(CLI::IsMember({"ckpt", "safetensors"}))
      ->capture_default_str();
  command.add_option("--file", args.file, "checkpoint to load (default: made once in the temp directory)");
  command.add_option("--threads", args.threads, "intra-op threads")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
}

}  // namespace

void add_bench_load_commands(CLI::App& bench) {
  auto args = std::make_shared<LoadBenchArgs>();
  auto* load =
      bench.add_subcommand("load", "time and measure loading a GPT checkpoint, naive vs volt vs floor");
  add_options(*load, *args);
  load->add_option("--modes", args->modes, "modes to run (default: all)")
      ->check(CLI::IsMember(all_modes()))
      ->delimiter(',');
  load->add_option("--python", args->python, "Python with torch 2.x and lightning, for the peer rows")
      ->capture_default_str();
  load->add_option("--repeat", args->repeat, "runs per mode (the median is reported)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  load->callback([args] { run_parent(*args); });

  auto mode = std::make_shared<std::string>();
  auto* child = bench.add_subcommand("load-child", "one mode of `bench load`, in this process");
  child->group("");
  add_options(*child, *args);
  child->add_option("--mode", *mode)->required();
  child->callback([args, mode] { std::cout << run_child(*args, *mode).dump() << std::endl; });
}

}  // namespace volt::tools

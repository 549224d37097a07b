#include "bench_init.h"

#include "bench_process.h"
#include "volt/models/gpt.h"
#include "volt/torch_compat.h"
#include "volt/volt.h"

#include <ATen/Parallel.h>
#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <map>
#include <thread>

#if VOLT_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace volt::tools {
namespace {

using nlohmann::json;

struct InitBenchArgs {
  std::string model = "gpt2-xl";
  std::string precision = "bf16-true";
  std::string accelerator = "cpu";
  std::vector<std::string> modes;
  int repeat = 1;
  int threads = static_cast<int>(std::thread::hardware_concurrency());
  std::string python = default_python();  // interpreter of the peer rows: the test venv's
};

const std::vector<std::string> kVoltModes{"naive", "init_module", "init_module_libtorch_rng",
                                          "empty", "meta",        "floor_fill"};
// Rows measured in Python (PyTorch 2.x and Lightning from the test venv), same GPT shape.
const std::vector<std::string> kPeerModes{"pytorch_naive", "lightning_init_module", "lightning_empty_init"};

bool is_peer_mode(const std::string& mode) {
  return std::find(kPeerModes.begin(), kPeerModes.end(), mode) != kPeerModes.end();
}

std::vector<std::string> all_modes() {
  auto modes = kVoltModes;
  modes.insert(modes.end(), kPeerModes.begin(), kPeerModes.end());
  return modes;
}

int64_t count_parameters(torch::nn::Module& module) {
  int64_t count = 0;
  for (const auto& p : volt::unique_parameters(module))
    count += p.numel();  // tied weights once, as PyTorch counts
  return count;
}

void synchronize(c10::Device device) {
#if VOLT_WITH_CUDA
  if (device.is_cuda()) torch::cuda::synchronize(device.index());
#else
  (void)device;
#endif
}

int64_t peak_device_bytes(c10::Device device) {
#if VOLT_WITH_CUDA
  if (device.is_cuda()) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index());
    return stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)].peak;
  }
#else
  (void)device;
#endif
  return 0;
}

// The machine's best for writing the model's bytes (DESIGN §6): fresh huge-page memory, a constant
// written by all threads. Anything slower than this is generator or allocator cost.
double floor_fill_seconds(int64_t bytes) {
  const double start = now_seconds();
  const size_t length = static_cast<size_t>(bytes);
  void* memory = mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  VOLT_CHECK(memory != MAP_FAILED, "floor_fill could not map ", bytes, " bytes");
  madvise(memory, length, MADV_HUGEPAGE);
  auto* data = static_cast<uint16_t*>(memory);
  at::parallel_for(0, bytes / 2, 1 << 20, [&](int64_t begin, int64_t end) {
    std::fill(data + begin, data + end, uint16_t{0x3c00});
  });
  const double seconds = now_seconds() - start;
  munmap(memory, length);
  return seconds;
}

json run_child(const InitBenchArgs& args, const std::string& mode) {
  at::set_num_threads(args.threads);
  const auto config = models::GPTConfig::preset(args.model);
  const Precision precision(args.precision);
  Trainer trainer(TrainerOptions()
                      .accelerator(args.accelerator)
                      .precision(precision)
                      .init_rng(mode == "init_module_libtorch_rng" ? InitRng::kLibTorch : InitRng::kCounter));
  const auto device = trainer.root_device();
  const auto dtype = precision.param_dtype();
  int64_t params = 0;
  double seconds = 0;
  if (mode == "floor_fill") {
    params = config.parameter_count();
    seconds = floor_fill_seconds(params * static_cast<int64_t>(c10::elementSize(dtype)));
  } else {
    const double start = now_seconds();
    models::GPT model{nullptr};
    if (mode == "naive") {
      model = models::GPT(config);  // float32 on the CPU, LibTorch's serial generator
      model->to(device, dtype);
    } else if (mode == "init_module" || mode == "init_module_libtorch_rng") {
      auto scope = trainer.init_module();
      model = models::GPT(config);
    } else if (mode == "empty") {
      auto scope = trainer.init_module(/*empty_init=*/true);
      model = models::GPT(config);
    } else if (mode == "meta") {
      auto scope = init_module(InitOptions().mode(InitMode::kMeta).dtype(dtype));
      model = models::GPT(config);
    } else {
      VOLT_FAIL("unknown init bench mode '", mode, "'");
    }
    synchronize(device);
    seconds = now_seconds() - start;
    params = count_parameters(*model);
    VOLT_CHECK(params == config.parameter_count(), "built ", params, " parameters, expected ",
               config.parameter_count());
    const auto first = model->parameters().front();
    VOLT_CHECK(first.scalar_type() == dtype, "mode ", mode, " built ", first.scalar_type(), " not ", dtype);
  }
  return json{{"seconds", seconds},
              {"peak_rss_bytes", peak_rss_bytes()},
              {"peak_device_bytes", peak_device_bytes(device)},
              {"params", params},
              {"device", device.str()},
              {"threads", at::get_num_threads()},
              {"torch_version", compat::torch_version()}};
}

json median_of(std::vector<json> runs) {
  std::sort(runs.begin(), runs.end(), [](const json& a, const json& b) {
    return a["seconds"].get<double>() < b["seconds"].get<double>();
  });
  json result = runs[runs.size() / 2];
  int64_t rss = 0;
  for (const auto& r : runs) rss = std::max(rss, r["peak_rss_bytes"].get<int64_t>());
  result["peak_rss_bytes"] = rss;
  result["repeats"] = runs.size();
  return result;
}

std::vector<std::string> child_command(const InitBenchArgs& args, const std::string& mode) {
  std::vector<std::string> common{"--mode",        mode,
                                  "--model",       args.model,
                                  "--precision",   args.precision,
                                  "--accelerator", args.accelerator,
                                  "--threads",     std::to_string(args.threads)};
  std::vector<std::string> command;
  if (is_peer_mode(mode))
    command = {args.python, peer_script("init_peer.py")};
  else
    command = {self_executable(), "bench", "init-child"};
  command.insert(command.end(), common.begin(), common.end());
  return command;
}

void run_parent(const InitBenchArgs& args) {
  auto modes = args.modes;
  if (modes.empty()) modes = all_modes();
  std::map<std::string, json> rows;
  for (const auto& mode : modes) {
    if (is_peer_mode(mode) && access(args.python.c_str(), X_OK) != 0) {
      rows[mode] =
          json{{"skipped", "no Python at " + args.python +
                               ": run scripts/install-deps.sh (it creates the venv) or pass --python"}};
      continue;
    }
    std::vector<json> runs;
    for (int r = 0; r < args.repeat; ++r) {
      const auto result = run_process(child_command(args, mode));
      const auto brace = result.output.rfind('{');
      VOLT_CHECK(result.exit_code == 0 && brace != std::string::npos, "mode ", mode, " failed (exit ",
                 result.exit_code, ")");
      runs.push_back(json::parse(result.output.substr(brace)));
    }
    rows[mode] = median_of(runs);
  }
  const json* baseline = rows.count("naive") ? &rows["naive"] : nullptr;
  std::fprintf(stderr, "%-26s %10s %14s %10s %10s\n", "mode", "seconds", "peak_rss_MB", "speedup",
               "rss_ratio");
  for (const auto& mode : modes) {
    json row{{"bench", "init"}, {"mode", mode}, {"model", args.model}, {"precision", args.precision}};
    row.update(rows[mode]);
    if (row.contains("skipped")) {
      std::cout << row.dump() << std::endl;
      std::fprintf(stderr, "%-26s skipped: %s\n", mode.c_str(), row["skipped"].get<std::string>().c_str());
      continue;
    }
    if (baseline) {
      row["baseline"] = "naive";
      row["speedup_vs_baseline"] = (*baseline)["seconds"].get<double>() / row["seconds"].get<double>();
      row["rss_ratio_vs_baseline"] =
          row["peak_rss_bytes"].get<double>() / (*baseline)["peak_rss_bytes"].get<double>();
    }
    std::cout << row.dump() << std::endl;
    std::fprintf(stderr, "%-26s %10.4f %14.1f %10.1f %10.3f\n", mode.c_str(), row["seconds"].get<double>(),
                 row["peak_rss_bytes"].get<double>() / 1e6, row.value("speedup_vs_baseline", 0.0),
                 row.value("rss_ratio_vs_baseline", 0.0));
  }
}

void add_common_options(CLI::App& command, InitBenchArgs& args) {
  command.add_option("--model", args.model, "GPT shape")
      ->check(CLI::IsMember(models::GPTConfig::preset_names()))
      ->capture_default_str();
  command.add_option("--precision", args.precision, "Lightning precision string")
      ->check(CLI::IsMember(Precision::valid_names()))
      ->capture_default_str();
  command.add_option("--accelerator", args.accelerator, "cpu, cuda or auto")->capture_default_str();
  command.add_option("--threads", args.threads, "intra-op threads of every mode, volt's and the peers'")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
}

}  // namespace

void add_bench_init_commands(CLI::App& bench) {
  auto args = std::make_shared<InitBenchArgs>();
  auto* init = bench.add_subcommand("init", "time and measure building a GPT in each init mode");
  add_common_options(*init, *args);
  init->add_option("--modes", args->modes, "modes to run (default: all)")
      ->check(CLI::IsMember(all_modes()))
      ->delimiter(',');
  init->add_option("--python", args->python, "Python with torch 2.x and lightning, for the peer rows")
      ->capture_default_str();
  init->add_option("--repeat", args->repeat, "runs per mode (the median is reported)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  init->callback([args] { run_parent(*args); });

  auto mode = std::make_shared<std::string>();
  auto* child = bench.add_subcommand("init-child", "one mode of `bench init`, in this process");
  child->group("");  // internal: started by `bench init`
  add_common_options(*child, *args);
  child->add_option("--mode", *mode)->required();
  child->callback([args, mode] { std::cout << run_child(*args, *mode).dump() << std::endl; });
}

}  // namespace volt::tools

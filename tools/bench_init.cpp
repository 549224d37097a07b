#include "bench_init.h"

#include "bench_process.h"
#include "volt/models/gpt.h"
#include "volt/torch_compat.h"
#include "volt/volt.h"

#include <ATen/Parallel.h>
#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
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
  int warmup = 1;
  std::string pages = "warm";
  int threads = static_cast<int>(std::thread::hardware_concurrency());
  std::string python = default_python();  // interpreter of the peer rows: the test venv's
};

const std::vector<std::string> kVoltModes{
    "naive", "init_module", "init_module_v1", "init_module_libtorch_rng", "empty",
    "meta",  "floor_fill",  "floor_fill_c",   "generate_cached"};
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
// written by all threads. Anything slower than this is generator or allocator cost. `floor_fill` runs on
// the threads volt's fills run on (run_on_init_threads), so that on either LibTorch leg it measures the
// memory, not LibTorch's parallel_for; `floor_fill_c` is the same fill as plain C would write it
// (std::thread, an even split, no volt, no LibTorch), the reference both are held to.
double floor_fill_seconds(int64_t bytes, bool plain_threads, int threads) {
  const double start = now_seconds();
  const size_t length = static_cast<size_t>(bytes);
  void* memory = mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  VOLT_CHECK(memory != MAP_FAILED, "floor_fill could not map ", bytes, " bytes");
  madvise(memory, length, MADV_HUGEPAGE);
  auto* data = static_cast<uint16_t*>(memory);
  const int64_t n = bytes / 2;
  auto fill = [data](int64_t begin, int64_t end) { std::fill(data + begin, data + end, uint16_t{0x3c00}); };
  if (plain_threads) {
    std::vector<std::thread> workers;
    for (int t = 1; t < threads; ++t) workers.emplace_back(fill, n * t / threads, n * (t + 1) / threads);
    fill(0, n / threads);
    for (auto& worker : workers) worker.join();
  } else {
    run_on_init_threads(n, fill);
  }
  const double seconds = now_seconds() - start;
  munmap(memory, length);
  return seconds;
}

// The generator alone: as many normal values as the model has parameters, drawn on volt's init threads
// into one small buffer per thread that stays in the core's cache (fill_normal_slice on 2^16 elements
// runs on its caller's thread), so that no page is faulted and no byte reaches memory. With floor_fill
// (the memory alone) it bounds init_module from below: init_module does both.
double generate_cached_seconds(int64_t values, c10::ScalarType dtype) {
  // A thread's first LibTorch call that reads the thread count (fill_normal_slice does) sets LibTorch 1.13's
  // pthreadpool going: perf showed its threads spinning ~80 ms on the cores the fill needs (0.30 s for this
  // row instead of 0.22 s). Pay that on every init thread before the clock starts (tasks that sleep, so
  // that each thread takes some).
  run_on_init_threads(int64_t{64} << 16, [](int64_t, int64_t) {
    at::get_num_threads();
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const double start = now_seconds();
  const int64_t chunk = int64_t{1} << 16;  // elements per call: 128 KiB of bfloat16
  run_on_init_threads(values, [dtype, chunk](int64_t begin, int64_t end) {
    at::Tensor buffer = at::empty({chunk}, at::TensorOptions().dtype(dtype));
    for (int64_t position = begin; position < end; position += chunk) {
      at::Tensor part = buffer.narrow(0, 0, std::min(chunk, end - position));
      fill_normal_slice(part, RandomKey{0x5eed, 1}, position, 0.0, 0.02);
    }
  });
  return now_seconds() - start;
}

// The SIMD flags of /proc/cpuinfo that decide which kernel can run, and the CPU's name.
json cpu_description() {
  static const char* const kFlags[] = {"avx",      "avx2",     "fma",      "f16c",        "avx512f",
                                       "avx512bw", "avx512dq", "avx512vl", "avx512_bf16", "avx512_fp16"};
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line, model, flags;
  while (std::getline(cpuinfo, line) && (model.empty() || flags.empty())) {
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    if (line.rfind("model name", 0) == 0 && model.empty()) model = line.substr(colon + 2);
    if (line.rfind("flags", 0) == 0 && flags.empty()) flags = " " + line.substr(colon + 1) + " ";
  }
  std::vector<std::string> seen;
  for (const char* flag : kFlags)
    if (flags.find(std::string(" ") + flag + " ") != std::string::npos) seen.emplace_back(flag);
  return json{{"cpu_model", model}, {"cpu_flags", seen}};
}

// The 1-minute load average: other work on the machine shows in every wall-clock figure.
double load_average() {
  std::ifstream loadavg("/proc/loadavg");
  double one_minute = -1;
  loadavg >> one_minute;
  return one_minute;
}

// Where a child's time went, from the kernel's own counters: user time is the generators' and the
// copies' work, system time mostly page faults (a huge page is zeroed by the kernel at first touch).
json resource_usage() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  auto seconds = [](const timeval& t) { return static_cast<double>(t.tv_sec) + 1e-6 * t.tv_usec; };
  return json{{"user_seconds", seconds(usage.ru_utime)},
              {"sys_seconds", seconds(usage.ru_stime)},
              {"minor_faults", usage.ru_minflt}};
}

// What the host does with the guest's free memory decides what a fault costs. These VMs report free
// memory back to the host (virtio-balloon free page reporting: blocks of 8 MiB and up, free for about
// 2 s), and the host drops it: the next first touch of such a page faults in the host too. Measured here:
// 1 GiB faulted in right after the previous 1 GiB was freed, 0.38-0.40 s; after 4 s idle, 3.4-5.3 s. So a
// row that allocates soon after another process freed its memory is several times faster than one that
// allocates later, whatever it computes. `warm` (the default) first faults in and frees the bytes the row
// is about to use, in this process, so that every row reuses memory the host still backs; `cold` waits
// until all free memory has been reported, so that every row pays the host, as a process on a machine
// that sat idle does; `as-is` does neither.
void prepare_pages(const std::string& pages, int64_t bytes, int threads) {
  if (pages == "cold") {
    std::this_thread::sleep_for(std::chrono::seconds(4));
  } else if (pages == "warm" && bytes > 0) {
    const size_t length = static_cast<size_t>(bytes);
    void* memory = mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    VOLT_CHECK(memory != MAP_FAILED, "could not map ", bytes, " bytes to warm up");
    madvise(memory, length, MADV_HUGEPAGE);
    auto touch = [memory](size_t begin, size_t end) {
      for (size_t offset = begin; offset < end; offset += 4096)
        static_cast<volatile char*>(memory)[offset] = 1;
    };
    std::vector<std::thread> workers;
    for (int t = 1; t < threads; ++t)
      workers.emplace_back(touch, length / 4096 * t / threads * 4096,
                           length / 4096 * (t + 1) / threads * 4096);
    touch(0, length / 4096 / threads * 4096);
    for (auto& worker : workers) worker.join();
    munmap(memory, length);
  }
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
  const int64_t model_bytes = config.parameter_count() * static_cast<int64_t>(c10::elementSize(dtype));
  if (device.is_cpu()) prepare_pages(args.pages, model_bytes, args.threads);
  reset_init_stats();
  const json usage_before = resource_usage();
  if (mode == "floor_fill" || mode == "floor_fill_c") {
    params = config.parameter_count();
    seconds = floor_fill_seconds(params * static_cast<int64_t>(c10::elementSize(dtype)),
                                 mode == "floor_fill_c", args.threads);
  } else if (mode == "generate_cached") {
    VOLT_CHECK(device.is_cpu(), "generate_cached measures the CPU generator; run it with --accelerator cpu");
    params = config.parameter_count();
    seconds = generate_cached_seconds(params, dtype);
  } else {
    const double start = now_seconds();
    models::GPT model{nullptr};
    if (mode == "naive") {
      model = models::GPT(config);  // float32 on the CPU, LibTorch's serial generator
      model->to(device, dtype);
    } else if (mode == "init_module" || mode == "init_module_libtorch_rng") {
      auto scope = trainer.init_module();
      model = models::GPT(config);
    } else if (mode == "init_module_v1") {  // init_module with the normal stream of volt before v2
      auto scope =
          init_module(InitOptions().device(device).dtype(dtype).stream(InitStream::kPhiloxBoxMuller24));
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
  json result{{"seconds", seconds},
              {"peak_rss_bytes", peak_rss_bytes()},
              {"peak_device_bytes", peak_device_bytes(device)},
              {"params", params},
              {"device", device.str()},
              {"threads", at::get_num_threads()},
              {"torch_version", compat::torch_version()},
              {"cpu_kernel", counter_rng_cpu_kernel()},
              {"init_stream", init_stream_name(mode == "init_module_v1" ? InitStream::kPhiloxBoxMuller24
                                                                        : InitOptions().stream())},
              {"pages", args.pages}};
  const json usage_after = resource_usage();
  for (const char* counter : {"user_seconds", "sys_seconds"})
    result[counter] = usage_after[counter].get<double>() - usage_before[counter].get<double>();
  result["minor_faults"] =
      usage_after["minor_faults"].get<int64_t>() - usage_before["minor_faults"].get<int64_t>();
  // CPU time of all threads: on a loaded machine wall time measures the neighbours as much as volt.
  result["cpu_seconds"] = result["user_seconds"].get<double>() + result["sys_seconds"].get<double>();
  // volt's own counters (init_stats.h): the row's time spent faulting memory in and generating, the
  // rest being module construction and dispatch; which allocator served the bytes; the fills' threads.
  // (generate_cached's fills run side by side on several threads, so their seconds add up past the row's.)
  const InitStats stats = init_stats();
  result["prefault_seconds"] = stats.prefault_seconds;
  result["cpu_fill_seconds"] = stats.cpu_fill_seconds;
  if (stats.huge_page_tensors + stats.small_tensors > 0)  // a row that built a model
    result["other_seconds"] = seconds - stats.prefault_seconds - stats.cpu_fill_seconds;
  result["cpu_fill_elements"] = stats.cpu_fill_elements;
  result["cpu_fill_threads"] = stats.cpu_fill_threads;
  result["huge_page_bytes"] = stats.huge_page_bytes;
  result["huge_page_tensors"] = stats.huge_page_tensors;
  result["small_bytes"] = stats.small_bytes;
  result["small_tensors"] = stats.small_tensors;
  result.update(cpu_description());
  return result;
}

// The median run of a mode, with the fastest and slowest beside it: on a shared VM the spread is part of
// the result.
json summary_of(std::vector<json> runs) {
  std::sort(runs.begin(), runs.end(), [](const json& a, const json& b) {
    return a["seconds"].get<double>() < b["seconds"].get<double>();
  });
  json result = runs[runs.size() / 2];
  int64_t rss = 0;
  json all = json::array(), loads = json::array();
  for (const auto& r : runs) {
    rss = std::max(rss, r["peak_rss_bytes"].get<int64_t>());
    all.push_back(r["seconds"]);
    loads.push_back(r["loadavg"]);
  }
  result["peak_rss_bytes"] = rss;
  result["repeats"] = runs.size();
  std::vector<double> cpu;
  for (const auto& r : runs) cpu.push_back(r["cpu_seconds"].get<double>());
  std::sort(cpu.begin(), cpu.end());
  result["cpu_seconds"] = cpu[cpu.size() / 2];  // the median of its own, not the median run's
  result["seconds_min"] = runs.front()["seconds"];
  result["seconds_max"] = runs.back()["seconds"];
  result["seconds_all"] = all;  // fastest first
  result["loadavg"] = loads;    // in the same order
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
    command = {self_executable(), "bench", "init-child", "--pages", args.pages};
  command.insert(command.end(), common.begin(), common.end());
  return command;
}

json run_mode(const InitBenchArgs& args, const std::string& mode) {
  const double load = load_average();
  const auto result = run_process(child_command(args, mode));
  const auto brace = result.output.rfind('{');
  VOLT_CHECK(result.exit_code == 0 && brace != std::string::npos, "mode ", mode, " failed (exit ",
             result.exit_code, ")");
  auto run = json::parse(result.output.substr(brace));
  run["loadavg"] = load;
  return run;
}

void run_parent(const InitBenchArgs& args) {
  auto modes = args.modes;
  if (modes.empty()) modes = all_modes();
  std::map<std::string, json> rows;
  std::map<std::string, std::vector<json>> runs;
  std::vector<std::string> measured;
  for (const auto& mode : modes) {
    if (is_peer_mode(mode) && access(args.python.c_str(), X_OK) != 0) {
      rows[mode] =
          json{{"skipped", "no Python at " + args.python +
                               ": run scripts/install-deps.sh (it creates the venv) or pass --python"}};
      continue;
    }
    measured.push_back(mode);
  }
  // A first touch of this much fresh memory after the machine sat idle costs the host several times a
  // later one: pay it in unrecorded passes, not in the first row.
  for (int w = 0; w < args.warmup; ++w) run_mode(args, "floor_fill_c");
  // Rows interleaved (every mode once, then again): drift in the machine's load spreads over all rows.
  for (int r = 0; r < args.repeat; ++r)
    for (const auto& mode : measured) runs[mode].push_back(run_mode(args, mode));
  for (const auto& mode : measured) rows[mode] = summary_of(runs[mode]);

  const json* baseline = rows.count("naive") ? &rows["naive"] : nullptr;
  std::fprintf(stderr, "%-26s %9s %9s %9s %12s %8s %9s %7s %s\n", "mode", "median_s", "min_s", "max_s",
               "peak_rss_MB", "speedup", "rss_ratio", "floor_x", "loadavg");
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
    // Ratios to the floors of the same run, of medians and of minima.
    for (const char* floor : {"floor_fill", "floor_fill_c"}) {
      if (!rows.count(floor) || mode == floor) continue;
      row[std::string("ratio_to_") + floor] =
          row["seconds"].get<double>() / rows[floor]["seconds"].get<double>();
      row[std::string("ratio_min_to_") + floor] =
          row["seconds_min"].get<double>() / rows[floor]["seconds_min"].get<double>();
      row[std::string("cpu_ratio_to_") + floor] =
          row["cpu_seconds"].get<double>() / rows[floor]["cpu_seconds"].get<double>();
    }
    std::cout << row.dump() << std::endl;
    std::ostringstream loads;
    for (const auto& load : row["loadavg"]) loads << (loads.tellp() > 0 ? "," : "") << load.get<double>();
    std::fprintf(stderr, "%-26s %9.4f %9.4f %9.4f %12.1f %8.1f %9.3f %7.2f %s\n", mode.c_str(),
                 row["seconds"].get<double>(), row["seconds_min"].get<double>(),
                 row["seconds_max"].get<double>(), row["peak_rss_bytes"].get<double>() / 1e6,
                 row.value("speedup_vs_baseline", 0.0), row.value("rss_ratio_vs_baseline", 0.0),
                 row.value("ratio_to_floor_fill_c", 0.0), loads.str().c_str());
  }
  if (!measured.empty()) {
    const auto& any = rows[measured.front()];
    std::fprintf(stderr, "kernel %s, stream %s on %s [%s], %s threads, LibTorch %s\n",
                 any.value("cpu_kernel", std::string("?")).c_str(),
                 any.value("init_stream", std::string("?")).c_str(),
                 any.value("cpu_model", std::string("?")).c_str(),
                 any.contains("cpu_flags") ? any["cpu_flags"].dump().c_str() : "?",
                 any.contains("threads") ? any["threads"].dump().c_str() : "?",
                 any.value("torch_version", std::string("?")).c_str());
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
  init->add_option("--repeat", args->repeat,
                   "runs per mode, interleaved (the median is `seconds`; min, max and all runs beside it)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  init->add_option("--warmup", args->warmup, "unrecorded floor_fill_c passes before the rows")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  init->add_option("--pages", args->pages,
                   "warm: each volt row first faults in and frees the bytes it will use (the host still "
                   "backs them); cold: each waits until the VM has returned its free memory to the host; "
                   "as-is: neither")
      ->check(CLI::IsMember({"warm", "cold", "as-is"}))
      ->capture_default_str();
  init->callback([args] { run_parent(*args); });

  auto mode = std::make_shared<std::string>();
  auto* child = bench.add_subcommand("init-child", "one mode of `bench init`, in this process");
  child->group("");  // internal: started by `bench init`
  add_common_options(*child, *args);
  child->add_option("--mode", *mode)->required();
  child->add_option("--pages", args->pages);
  child->callback([args, mode] { std::cout << run_child(*args, *mode).dump() << std::endl; });
}

}  // namespace volt::tools

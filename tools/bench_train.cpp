#include "bench_train.h"

#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <map>
#include <thread>

#include <unistd.h>

#include "bench_process.h"
#include "volt/torch_compat.h"
#include "volt/volt.h"

namespace volt::tools {
namespace {

using nlohmann::json;

struct TrainBenchArgs {
  std::string data = data::FashionMNIST::kDefaultRoot;
  std::string precision;  // default: the fastest that is native here (volt::fastest_precision)
  std::string accelerator = "cpu";
  int64_t steps = 100;
  int64_t warmup = 10;
  int64_t rounds = 3;
  int64_t batch_size = 128;  // per rank
  int threads = static_cast<int>(std::thread::hardware_concurrency());
  int64_t devices = 1;
  std::string strategy = "auto";
  std::string python = default_python();  // the Lightning peer's (the test venv's)
};

// Counts the steps the Trainer takes and times them from the first measured one.
struct StepTimer : Callback {
  explicit StepTimer(int64_t warmup) : warmup(warmup) {}
  void on_train_batch_end(Trainer& trainer, Module&, int64_t) override {
    if (trainer.global_step() == warmup) start = now_seconds();
    end = now_seconds();
  }
  int64_t warmup;
  double start = 0, end = 0;
};

json run_child(const TrainBenchArgs& args, const std::string& mode) {
  // The cores are shared by the ranks of this machine, as Lightning's DDP sets torch's threads.
  if (args.threads > 0)
    torch::set_num_threads(std::max<int>(1, args.threads / static_cast<int>(args.devices)));
  torch::manual_seed(0);
  auto train = data::FashionMNIST(data::FashionMNIST::kTrain, args.data);
  train.normalize();
  auto loader = torch::data::make_data_loader(train, torch::data::samplers::RandomSampler(60000),
                                              torch::data::DataLoaderOptions(args.batch_size));
  const Precision precision(args.precision);
  const Accelerator accelerator(args.accelerator);
  const auto device = accelerator.device_for_local_rank(0);
  const int64_t total = args.warmup + args.steps;
  double seconds = 0;
  if (mode == "trainer") {
    auto timer = std::make_shared<StepTimer>(args.warmup);
    Trainer trainer(TrainerOptions()
                        .accelerator(args.accelerator)
                        .devices(args.devices)
                        .strategy(args.strategy)
                        .precision(args.precision)
                        .max_steps(total)
                        .use_distributed_sampler(false)  // the loader's sampler shards the samples itself
                        .enable_progress_bar(false)
                        .enable_logger(false)
                        .enable_checkpointing(false)
                        .callbacks({timer}));
    models::FashionCNN model{nullptr};
    {
      auto scope = trainer.init_module();
      model = models::FashionCNN();
    }
    // Each rank its shard of the samples, reshuffled per epoch (PyTorch's DistributedSampler).
    auto sharded = torch::data::make_data_loader(
        train,
        DistributedSampler(
            60000,
            DistributedSamplerOptions().num_replicas(trainer.world_size()).rank(trainer.global_rank())),
        torch::data::DataLoaderOptions(args.batch_size));
    const int64_t per_rank = (60000 + trainer.world_size() - 1) / trainer.world_size();
    trainer.fit(*model, BatchSource(sharded, (per_rank + args.batch_size - 1) / args.batch_size));
    seconds = timer->end - timer->start;
    const double largest_rss =
        trainer.strategy().reduce(static_cast<double>(peak_rss_bytes()), ReduceOp::kMax);
    if (!trainer.is_global_zero()) std::exit(0);  // rank 0 reports for the run
    return {{"mode", mode},
            {"steps", args.steps},
            {"seconds", seconds},
            {"peak_rss_bytes", largest_rss},
            {"world_size", trainer.world_size()},
            {"threads", at::get_num_threads()}};
  } else {
    // The loop a LibTorch user writes by hand for the same model, optimizer, schedule and precision.
    models::FashionCNN model{nullptr};
    {
      auto scope = init_module(InitOptions().device(device).dtype(precision.param_dtype()));
      model = models::FashionCNN();
    }
    auto config = model->configure_optimizers();
    auto& optimizer = *config.optimizer;
    model->train();
    const auto input_dtype =
        precision.is_mixed() ? c10::nullopt : c10::optional<c10::ScalarType>(precision.param_dtype());
    int64_t step = 0;
    double start = 0;
    at::Tensor running = torch::zeros({}, torch::kFloat);
    while (step < total) {
      for (auto& example : *loader) {
        if (step == args.warmup) start = now_seconds();
        Batch batch = Batch(example).to(device, input_dtype);
        at::Tensor loss;
        {
          c10::optional<AutocastGuard> autocast;
          if (precision.is_mixed()) autocast.emplace(device.type(), *precision.autocast_dtype());
          loss = torch::cross_entropy_loss(model->forward(batch.data).to(torch::kFloat), batch.target);
        }
        loss.backward();
        optimizer.step();
        optimizer.zero_grad();
        running += loss.detach();
        if (++step == total) break;
      }
    }
    seconds = now_seconds() - start;
  }
  return {{"mode", mode},       {"steps", args.steps},
          {"seconds", seconds}, {"peak_rss_bytes", peak_rss_bytes()},
          {"world_size", 1},    {"threads", at::get_num_threads()}};
}

// `--strategy ddp`: one process on the global batch, volt's DDP and Lightning's DDP, interleaved per round.
void run_parent_ddp(const TrainBenchArgs& args) {
  const std::vector<std::string> modes{"single_device", "ddp", "lightning_ddp"};
  std::map<std::string, std::vector<double>> rates;
  std::map<std::string, json> last;
  auto child = [&](const std::string& mode) -> json {
    std::vector<std::string> command;
    if (mode == "lightning_ddp") {
      if (access(args.python.c_str(), X_OK) != 0)
        return json{
            {"skipped", "no Python at " + args.python + ": run scripts/install-deps.sh or pass --python"}};
      command = {args.python,    peer_script("train_peer.py"),
                 "--data",       args.data,
                 "--devices",    std::to_string(args.devices),
                 "--batch-size", std::to_string(args.batch_size),
                 "--steps",      std::to_string(args.steps),
                 "--warmup",     std::to_string(args.warmup),
                 "--precision",  args.precision};
    } else {
      const bool single = mode == "single_device";
      command = {self_executable(),
                 "bench",
                 "train-child",
                 "--mode",
                 "trainer",
                 "--data",
                 args.data,
                 "--precision",
                 args.precision,
                 "--accelerator",
                 args.accelerator,
                 "--steps",
                 std::to_string(args.steps),
                 "--warmup",
                 std::to_string(args.warmup),
                 "--batch-size",
                 std::to_string(single ? args.batch_size * args.devices : args.batch_size),
                 "--threads",
                 std::to_string(args.threads),
                 "--devices",
                 std::to_string(single ? 1 : args.devices),
                 "--strategy",
                 single ? "single_device" : "ddp"};
    }
    const auto result = run_process(command);
    VOLT_CHECK(result.exit_code == 0, "bench train ", mode, " failed: ", result.output);
    return json::parse(result.output.substr(result.output.rfind('{')));
  };
  for (int64_t round = 0; round < args.rounds; ++round) {
    std::vector<std::string> order = modes;
    std::rotate(order.begin(), order.begin() + round % static_cast<int64_t>(order.size()), order.end());
    for (const auto& mode : order) {
      const json row = child(mode);
      last[mode] = row;
      if (row.contains("skipped")) continue;
      const double rate = row.contains("steps_per_second") ? row["steps_per_second"].get<double>()
                                                           : args.steps / row["seconds"].get<double>();
      rates[mode].push_back(rate);
      std::fprintf(stderr, "round %lld %-14s %8.2f steps/s\n", static_cast<long long>(round), mode.c_str(),
                   rate);
    }
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  const double baseline = rates.count("single_device") ? median(rates["single_device"]) : 0.0;
  for (const auto& mode : modes) {
    json row{{"bench", "train"},
             {"mode", mode},
             {"model", "fashion_cnn"},
             {"precision", args.precision},
             {"device", args.accelerator},
             {"global_batch_size", args.batch_size * args.devices},
             {"steps", args.steps},
             {"rounds", args.rounds},
             {"baseline", "single_device"},
             {"torch_version", compat::torch_version()},
             {"cpu_flags", CpuFeatures::host().flags()}};
    if (last[mode].contains("skipped")) {
      row["skipped"] = last[mode]["skipped"];
    } else {
      const double rate = median(rates[mode]);
      row["steps_per_second"] = rate;
      row["all_steps_per_second"] = rates[mode];
      row["samples_per_second"] = rate * static_cast<double>(args.batch_size * args.devices);
      row["speed_ratio_vs_baseline"] = baseline > 0 ? rate / baseline : 0.0;
      for (const char* key : {"peak_rss_bytes", "world_size", "threads", "lightning_version"})
        if (last[mode].contains(key)) row[key] = last[mode][key];
      if (mode == "lightning_ddp") row["torch_version"] = last[mode]["torch_version"];
    }
    std::cout << row.dump() << std::endl;
  }
}

void run_parent(TrainBenchArgs args) {
  if (args.precision.empty()) {
    const auto choice = fastest_precision(Accelerator(args.accelerator).device_type());
    args.precision = choice.precision.name();
    std::fprintf(stderr, "precision %s: %s\n", args.precision.c_str(), choice.reason.c_str());
  }
  std::fprintf(stderr, "CPU: %s\n", CpuFeatures::host().summary().c_str());
  if (args.strategy == "ddp" || args.devices > 1) return run_parent_ddp(args);
  std::map<std::string, std::vector<double>> rates;
  std::map<std::string, json> last;
  for (int64_t round = 0; round < args.rounds; ++round) {
    // Alternate which mode goes first, so that drift of the machine falls on both alike.
    std::vector<std::string> order{"handwritten", "trainer"};
    if (round % 2 == 1) std::reverse(order.begin(), order.end());
    for (const auto& mode : order) {
      const auto result =
          run_process({self_executable(), "bench", "train-child", "--mode", mode, "--data", args.data,
                       "--precision", args.precision, "--accelerator", args.accelerator, "--steps",
                       std::to_string(args.steps), "--warmup", std::to_string(args.warmup), "--batch-size",
                       std::to_string(args.batch_size), "--threads", std::to_string(args.threads)});
      VOLT_CHECK(result.exit_code == 0, "bench train-child --mode ", mode, " failed: ", result.output);
      const auto row = json::parse(result.output.substr(result.output.rfind('{')));
      rates[mode].push_back(static_cast<double>(args.steps) / row["seconds"].get<double>());
      last[mode] = row;
      std::fprintf(stderr, "round %lld %-12s %8.2f steps/s\n", static_cast<long long>(round), mode.c_str(),
                   rates[mode].back());
    }
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  const double baseline = median(rates["handwritten"]);
  std::fprintf(stderr, "%-12s %12s %14s %10s\n", "mode", "steps_per_s", "peak_rss_MB", "vs_hand");
  for (const std::string mode : {"handwritten", "trainer"}) {
    const double rate = median(rates[mode]);
    json row{{"bench", "train"},
             {"mode", mode},
             {"model", "fashion_cnn"},
             {"precision", args.precision},
             {"device", args.accelerator},
             {"batch_size", args.batch_size},
             {"steps", args.steps},
             {"rounds", args.rounds},
             {"steps_per_second", rate},
             {"all_steps_per_second", rates[mode]},
             {"peak_rss_bytes", last[mode]["peak_rss_bytes"]},
             {"baseline", "handwritten"},
             {"speed_ratio_vs_baseline", rate / baseline},
             {"torch_version", compat::torch_version()},
             {"cpu_flags", CpuFeatures::host().flags()},
             {"threads", args.threads > 0 ? args.threads : at::get_num_threads()}};
    std::cout << row.dump() << std::endl;
    std::fprintf(stderr, "%-12s %12.2f %14.1f %10.4f\n", mode.c_str(), rate,
                 last[mode]["peak_rss_bytes"].get<double>() / 1e6, rate / baseline);
  }
}

void add_options(CLI::App* cmd, TrainBenchArgs& args) {
  cmd->add_option("--data", args.data, "Fashion-MNIST folder");
  cmd->add_option("--precision", args.precision, "default: bf16-mixed with native bf16, else 32-true");
  cmd->add_option("--accelerator", args.accelerator);
  cmd->add_option("--steps", args.steps, "measured optimizer steps per run");
  cmd->add_option("--warmup", args.warmup, "steps before the clock starts");
  cmd->add_option("--batch-size", args.batch_size);
  cmd->add_option("--threads", args.threads,
                  "intra-op threads of all of a run's processes (default: all cores)");
  cmd->add_option("--devices", args.devices, "processes of the ddp modes");
  cmd->add_option("--strategy", args.strategy, "ddp: compare single_device, volt's ddp and Lightning's ddp");
  cmd->add_option("--python", args.python, "Python with torch 2.x and lightning, for the lightning_ddp row");
}

}  // namespace

void add_bench_train_commands(CLI::App& bench) {
  auto args = std::make_shared<TrainBenchArgs>();
  auto* train = bench.add_subcommand("train", "steps/s of the Trainer vs a hand-written loop, interleaved");
  add_options(train, *args);
  train->add_option("--rounds", args->rounds, "child processes per mode, alternating");
  train->callback([args] { run_parent(*args); });
  auto mode = std::make_shared<std::string>();
  auto* child = bench.add_subcommand("train-child", "one run of `bench train`, in this process");
  child->group("");
  add_options(child, *args);
  child->add_option("--mode", *mode)->required();
  child->callback([args, mode] { std::cout << run_child(*args, *mode).dump() << std::endl; });
}

}  // namespace volt::tools

#include "bench_shard.h"

#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <iostream>
#include <thread>

#include "bench_process.h"
#include "volt/torch_compat.h"
#include "volt/volt.h"

namespace volt::tools {
namespace {

using nlohmann::json;

struct ShardBenchArgs {
  std::string model = "gpt2-large";
  std::string precision = "bf16-true";  // two float32 replicas with AdamW state would not fit 24 GB
  int64_t devices = 2;
  int64_t steps = 2;     // measured AdamW steps of the train modes
  int64_t seq_len = 32;  // tokens per sample; one sample per rank and step
  int threads = static_cast<int>(std::thread::hardware_concurrency());
};

// A GPT-2 language model whose layers are made in configure_model(), timing how long building took.
struct BenchLM : Module {
  explicit BenchLM(models::GPTConfig config) : config(config) {}
  void configure_model() override {
    if (gpt) return;
    start = now_seconds();
    gpt = register_module("gpt", models::GPT(config));
    built = now_seconds();
  }
  // After the strategy's setup (placement, broadcast, shard materialization).
  void on_fit_start() override { ready = now_seconds(); }
  at::Tensor training_step(const Batch& b, int64_t) override {
    auto logits = gpt(b.data);
    return torch::cross_entropy_loss(logits.reshape({-1, logits.size(-1)}).to(torch::kFloat),
                                     b.target.reshape({-1}));
  }
  OptimizerConfig configure_optimizers() override {
    return OptimizerConfig(
        std::make_shared<torch::optim::AdamW>(unique_parameters(*this), torch::optim::AdamWOptions(1e-4)));
  }
  models::GPTConfig config;
  models::GPT gpt{nullptr};
  double start = 0, built = 0, ready = 0;
};

struct StepClock : Callback {
  void on_train_batch_end(Trainer& trainer, Module&, int64_t) override {
    if (trainer.global_step() == 1) first = now_seconds();  // the first step warms up
    last = now_seconds();
  }
  double first = 0, last = 0;
};

json run_child(const ShardBenchArgs& args, const std::string& mode) {
  const auto config = models::GPTConfig::preset(args.model);
  const bool single = mode == "single_init_module";
  const int64_t devices = single ? 1 : args.devices;
  torch::set_num_threads(std::max<int>(1, args.threads / static_cast<int>(devices)));
  if (single) {
    const double start = now_seconds();
    auto scope = init_module(InitOptions().dtype(Precision(args.precision).param_dtype()));
    models::GPT model(config);
    return {{"mode", mode},
            {"seconds", now_seconds() - start},
            {"peak_rss_bytes", peak_rss_bytes()},
            {"world_size", 1}};
  }
  const bool fsdp = mode.rfind("fsdp", 0) == 0, train = mode.find("train") != std::string::npos;
  const int64_t steps = train ? args.steps + 1 : 0;
  auto clock = std::make_shared<StepClock>();
  Trainer trainer(TrainerOptions()
                      .accelerator("cpu")
                      .devices(devices)
                      .strategy(fsdp ? "fsdp" : "ddp")
                      .sharding(ShardingOptions().auto_wrap_modules({"Block"}))
                      .precision(args.precision)
                      .max_steps(steps)
                      .enable_progress_bar(false)
                      .enable_logger(false)
                      .enable_checkpointing(false)
                      .callbacks({clock}));
  torch::manual_seed(0);
  auto model = std::make_shared<BenchLM>(config);
  auto gen = at::detail::createCPUGenerator(1);
  std::vector<Batch> batches;
  for (int64_t i = 0; i < std::max<int64_t>(steps, 1) * devices; ++i) {
    const auto tokens = at::randint(config.vocab_size(), {1, args.seq_len + 1}, gen);
    batches.emplace_back(tokens.slice(1, 0, args.seq_len).contiguous(), tokens.slice(1, 1).contiguous());
  }
  trainer.fit(*model, batches);
  const double rss = trainer.strategy().reduce(static_cast<double>(peak_rss_bytes()), ReduceOp::kMax);
  // The slowest rank's build: configure_model() plus the strategy's setup (DDP: rank 0's broadcast; FSDP:
  // each rank materializes its shard).
  const double build = trainer.strategy().reduce(model->ready - model->start, ReduceOp::kMax);
  if (!trainer.is_global_zero()) std::exit(0);
  json row{{"mode", mode}, {"peak_rss_bytes", rss}, {"world_size", trainer.world_size()}};
  if (train) {
    row["seconds"] = (clock->last - clock->first) / static_cast<double>(args.steps);
    row["steps"] = args.steps;
  } else {
    row["seconds"] = build;
    row["configure_model_seconds"] = model->built - model->start;
  }
  return row;
}

void run_parent(const ShardBenchArgs& args) {
  std::fprintf(stderr, "CPU: %s\n", CpuFeatures::host().summary().c_str());
  const std::vector<std::string> modes{"single_init_module", "ddp_build", "fsdp_configure_model", "ddp_train",
                                       "fsdp_train"};
  std::map<std::string, json> rows;
  for (const auto& mode : modes) {
    const auto result = run_process(
        {self_executable(), "bench", "shard-child", "--mode", mode, "--model", args.model, "--precision",
         args.precision, "--devices", std::to_string(args.devices), "--steps", std::to_string(args.steps),
         "--seq-len", std::to_string(args.seq_len), "--threads", std::to_string(args.threads)});
    VOLT_CHECK(result.exit_code == 0, "bench shard-child --mode ", mode, " failed: ", result.output);
    rows[mode] = json::parse(result.output.substr(result.output.rfind('{')));
    std::fprintf(stderr, "%-22s %9.3f s %10.1f MB peak RSS (largest rank)\n", mode.c_str(),
                 rows[mode]["seconds"].get<double>(), rows[mode]["peak_rss_bytes"].get<double>() / 1e6);
  }
  // Each row against its whole-model twin: the build against DDP's, and against init_module / world size.
  const std::map<std::string, std::string> baseline{{"single_init_module", "single_init_module"},
                                                    {"ddp_build", "ddp_build"},
                                                    {"fsdp_configure_model", "ddp_build"},
                                                    {"ddp_train", "ddp_train"},
                                                    {"fsdp_train", "ddp_train"}};
  for (const auto& mode : modes) {
    json row = rows[mode];
    const json& base = rows[baseline.at(mode)];
    row["bench"] = "shard";
    row["model"] = args.model;
    row["precision"] = args.precision;
    row["baseline"] = baseline.at(mode);
    row["rss_ratio_vs_baseline"] = row["peak_rss_bytes"].get<double>() / base["peak_rss_bytes"].get<double>();
    row["time_ratio_vs_baseline"] = row["seconds"].get<double>() / base["seconds"].get<double>();
    if (mode == "fsdp_configure_model")
      row["time_ratio_vs_init_module_per_rank"] =
          row["seconds"].get<double>() /
          (rows["single_init_module"]["seconds"].get<double>() / static_cast<double>(args.devices));
    row["torch_version"] = compat::torch_version();
    row["cpu_flags"] = CpuFeatures::host().flags();
    row["threads"] = args.threads;
    std::cout << row.dump() << std::endl;
  }
}

void add_options(CLI::App* cmd, ShardBenchArgs& args) {
  cmd->add_option("--model", args.model, "gpt2, gpt2-medium, gpt2-large, gpt2-xl");
  cmd->add_option("--precision", args.precision);
  cmd->add_option("--devices", args.devices, "processes of the ddp and fsdp modes");
  cmd->add_option("--steps", args.steps, "measured AdamW steps of the train modes (after one warm-up step)");
  cmd->add_option("--seq-len", args.seq_len, "tokens per sample (one sample per rank and step)");
  cmd->add_option("--threads", args.threads, "intra-op threads of all of a run's processes");
}

}  // namespace

void add_bench_shard_commands(CLI::App& bench) {
  auto args = std::make_shared<ShardBenchArgs>();
  auto* shard =
      bench.add_subcommand("shard", "building and training GPT-2 whole per rank (DDP) vs sharded (FSDP)");
  add_options(shard, *args);
  shard->callback([args] { run_parent(*args); });
  auto mode = std::make_shared<std::string>();
  auto* child = bench.add_subcommand("shard-child", "one mode of `bench shard`, in this process");
  child->group("");
  add_options(child, *args);
  child->add_option("--mode", *mode)->required();
  child->callback([args, mode] { std::cout << run_child(*args, *mode).dump() << std::endl; });
}

}  // namespace volt::tools

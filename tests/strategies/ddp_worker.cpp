// A training program for the DDP tests, written as a user would: a plain main() with a Trainer whose
// devices / strategy come from the command line. Started with --devices N it launches its other ranks
// itself; under torchrun or SLURM it reads their variables. Rank 0 writes the final weights.
//
//   volt_ddp_worker --devices 2 --batch 8 --steps 8 --out weights.safetensors
#include <csignal>
#include <cstdlib>
#include <iostream>
#include <string>

#include <torch/torch.h>

#include "distributed/device_checking_group.h"
#include "volt/data/data_loader.h"
#include "volt/strategies/ddp_strategy.h"
#include "volt/strategies/fsdp_strategy.h"
#include "volt/strategies/zero_strategy.h"
#include "volt/volt.h"

namespace {

struct Args {
  int64_t devices = 1, num_nodes = 1, batch = 8, samples = 96, steps = 8, accumulate = 1;
  int64_t ckpt_every = 0, kill_rank = -1, kill_step = -1, timeout_ms = 60000;
  double clip = 0;
  std::string out, root = ".", resume, init, data, strategy = "auto", precision = "32-true", model = "mlp";
  std::string accelerator = "cpu";
  std::string wrap;                      // sharded strategies: the module type that becomes a unit
  std::string state_dict_type = "full";  // FSDP checkpoints: "full" or "sharded" (a DCP directory)
  bool sample_sampler = false, configure = false;
  bool device_check = false;
  bool no_fit = false;       // Fabric-style: setup_model, then save (no loop)
  bool plain_build = false;  // --build plain: the model built outside any init scope (LibTorch's init)  //
                             // the strategy on the fake accelerator, its group checking every tensor
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    VOLT_CHECK(i + 1 < argc, "option ", k, " needs a value");
    const std::string v = argv[++i];
    if (k == "--devices")
      a.devices = std::stoll(v);
    else if (k == "--num-nodes")
      a.num_nodes = std::stoll(v);
    else if (k == "--batch")
      a.batch = std::stoll(v);
    else if (k == "--samples")
      a.samples = std::stoll(v);
    else if (k == "--steps")
      a.steps = std::stoll(v);
    else if (k == "--accumulate")
      a.accumulate = std::stoll(v);
    else if (k == "--ckpt-every")
      a.ckpt_every = std::stoll(v);
    else if (k == "--kill-rank")
      a.kill_rank = std::stoll(v);
    else if (k == "--kill-step")
      a.kill_step = std::stoll(v);
    else if (k == "--timeout-ms")
      a.timeout_ms = std::stoll(v);
    else if (k == "--clip")
      a.clip = std::stod(v);
    else if (k == "--out")
      a.out = v;
    else if (k == "--root")
      a.root = v;
    else if (k == "--resume")
      a.resume = v;
    else if (k == "--init")
      a.init = v;
    else if (k == "--data")
      a.data = v;
    else if (k == "--strategy")
      a.strategy = v;
    else if (k == "--precision")
      a.precision = v;
    else if (k == "--model")
      a.model = v;
    else if (k == "--build")
      a.configure = v == "configure", a.plain_build = v == "plain";
    else if (k == "--wrap")
      a.wrap = v;
    else if (k == "--state-dict")
      a.state_dict_type = v;
    else if (k == "--sampler")
      a.sample_sampler = v == "samples";
    else if (k == "--accelerator")
      a.accelerator = v;
    else if (k == "--no-fit")
      a.no_fit = v == "1";
    else if (k == "--device-check")
      a.device_check = v == "1";
    else if (k == "--tag") {
    }  // marks this run's processes for the tests' orphan check
    else
      VOLT_FAIL("unknown option ", k);
  }
  return a;
}

// A 4-class classifier over 8 features, trained with AdamW; subclasses define the network.
struct Classifier : volt::Module {
  virtual at::Tensor forward(const at::Tensor& x) = 0;
  at::Tensor training_step(const volt::Batch& b, int64_t) override {
    auto loss = torch::cross_entropy_loss(forward(b.data).to(torch::kFloat), b.target);
    log("train_loss", loss, volt::LogOptions().sync_dist(true));
    return loss;
  }
  volt::OptimizerConfig configure_optimizers() override {
    return volt::OptimizerConfig(std::make_shared<torch::optim::AdamW>(
        parameters(), torch::optim::AdamWOptions(1e-2).weight_decay(1e-2)));
  }
};

struct MLP : Classifier {
  struct Late {};
  MLP() { build(); }
  explicit MLP(Late) {}
  void build() {
    fc1 = register_module("fc1", torch::nn::Linear(8, 32));
    fc2 = register_module("fc2", torch::nn::Linear(32, 4));
  }
  at::Tensor forward(const at::Tensor& x) override { return fc2(torch::tanh(fc1(x))); }
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};

// The MLP with its layers made in configure_model() (as the sharded strategies need).
struct LateMLP : MLP {
  LateMLP() : MLP(Late{}) {}
  void configure_model() override {
    if (!fc1) build();
  }
};

// A small GPT-2 language model over random tokens, built in configure_model().
struct LM : volt::Module {
  void configure_model() override {
    if (!gpt)
      gpt = register_module(
          "gpt",
          volt::models::GPT(
              volt::models::GPTConfig().vocab_size(64).block_size(16).n_layer(3).n_head(2).n_embd(24)));
  }
  at::Tensor training_step(const volt::Batch& b, int64_t) override {
    auto logits = gpt(b.data);
    auto loss = torch::cross_entropy_loss(logits.reshape({-1, logits.size(-1)}).to(torch::kFloat),
                                          b.target.reshape({-1}));
    log("train_loss", loss, volt::LogOptions().sync_dist(true));
    return loss;
  }
  volt::OptimizerConfig configure_optimizers() override {
    return volt::OptimizerConfig(std::make_shared<torch::optim::AdamW>(
        volt::unique_parameters(*this), torch::optim::AdamWOptions(1e-2).weight_decay(1e-2)));
  }
  volt::models::GPT gpt{nullptr};
};

// A module written without any LibTorch layer or reset_parameters(), as research code often is:
// parameters from factory functions, out-of-place and in-place arithmetic, a hand-zeroed padding row,
// a buffer computed by model code, and row counts (13, 7) that no world size of 2 or 3 splits evenly.
struct Custom : Classifier {
  void configure_model() override {
    if (w1.defined()) return;
    torch::NoGradGuard no_grad;
    w1 = register_parameter("w1", torch::randn({13, 8}) * 0.2);
    b1 = register_parameter("b1", torch::zeros({13}));
    w2 = register_parameter("w2", torch::empty({4, 13}).uniform_(-0.3, 0.3));
    gain = register_parameter("gain", torch::ones({4}).mul_(1.5).add_(torch::arange(4) * 0.25));
    auto table = torch::empty({7, 8});
    torch::nn::init::normal_(table, 0.0, 0.02);
    table[0].zero_();
    embed = register_parameter("embed", table);
    freq = register_buffer("freq", torch::exp(torch::arange(0, 8, 2).to(torch::kFloat) * -0.5).repeat({2}));
  }
  at::Tensor forward(const at::Tensor& x) override {
    // A row of the table per sample, from the sample itself (so any batch split picks the same rows).
    const auto positions = (x.select(1, 0).abs() * 4).to(at::kLong).clamp_max(6);
    const auto h = torch::tanh(torch::addmm(b1, x * freq + embed.index_select(0, positions), w1.t()));
    return h.matmul(w2.t()) * gain;
  }
  at::Tensor w1, b1, w2, gain, embed, freq;
};

// A user-defined strategy: one of volt's, placed on the fake accelerator of the tests, with its process
// group wrapped so that any tensor not on that device fails the collective it is handed to.
template <typename Base>
struct DeviceChecked : Base {
  using Base::Base;
  c10::Device root_device() const override { return volt::testing::fake_device(); }
  // The init engine places tensors on the CPU, CUDA or meta only: configure_model() runs in a plain scope
  // (FSDP's deferred scope places nothing and stays).
  volt::InitScope configure_model_context() const override {
    if constexpr (std::is_base_of_v<volt::FSDPStrategy, Base>) return Base::configure_model_context();
    return volt::InitScope(volt::InitOptions());
  }

 protected:
  std::shared_ptr<volt::ProcessGroup> connect_process_group() override {
    return std::make_shared<volt::testing::DeviceCheckingGroup>(Base::connect_process_group());
  }
};

std::shared_ptr<volt::Strategy> device_checked(const volt::StrategyOptions& options) {
  volt::testing::enable_fake_device();
  if (options.name() == "fsdp") return std::make_shared<DeviceChecked<volt::FSDPStrategy>>(options);
  if (options.name().rfind("deepspeed_stage_", 0) == 0)
    return std::make_shared<DeviceChecked<volt::ZeroStrategy>>(options);
  return std::make_shared<DeviceChecked<volt::DDPStrategy>>(options);
}

// Kills this process at a chosen step (a rank dying mid-epoch).
struct KillAt : volt::Callback {
  KillAt(int64_t rank, int64_t step) : rank(rank), step(step) {}
  void on_train_batch_end(volt::Trainer& trainer, volt::Module&, int64_t) override {
    if (trainer.global_rank() == rank && trainer.global_step() == step) std::raise(SIGKILL);
  }
  int64_t rank, step;
};

}  // namespace

int main(int argc, char** argv) try {
  const Args args = parse(argc, argv);
  torch::set_num_threads(1);
  std::vector<std::shared_ptr<volt::Callback>> callbacks;
  if (args.kill_rank >= 0) callbacks.push_back(std::make_shared<KillAt>(args.kill_rank, args.kill_step));
  if (args.ckpt_every > 0)
    callbacks.push_back(std::make_shared<volt::ModelCheckpoint>(volt::ModelCheckpointOptions()
                                                                    .dirpath(args.root + "/checkpoints")
                                                                    .filename("{step}")
                                                                    .every_n_train_steps(args.ckpt_every)
                                                                    .save_top_k(-1)));
  const auto sharding = volt::ShardingOptions()
                            .auto_wrap_modules(args.wrap.empty() ? std::vector<std::string>{}
                                                                 : std::vector<std::string>{args.wrap})
                            .state_dict_type(args.state_dict_type);
  auto options = volt::TrainerOptions();
  if (args.device_check)
    options.strategy(device_checked(volt::StrategyOptions()
                                        .name(args.strategy)
                                        .accelerator("cpu")
                                        .devices(args.devices)
                                        .num_nodes(args.num_nodes)
                                        .precision(args.precision)
                                        .timeout(std::chrono::milliseconds(args.timeout_ms))
                                        .sharding(sharding)));
  else
    options.accelerator(args.accelerator)
        .devices(args.devices)
        .num_nodes(args.num_nodes)
        .strategy(args.strategy)
        .precision(args.precision)
        .timeout(std::chrono::milliseconds(args.timeout_ms))
        .sharding(sharding);
  volt::Trainer trainer(
      options.max_steps(args.steps)
          .accumulate_grad_batches(args.accumulate)
          .gradient_clip_val(args.clip > 0 ? c10::optional<double>(args.clip) : c10::nullopt)
          .default_root_dir(args.root)
          .enable_progress_bar(false)
          .enable_logger(false)
          .enable_checkpointing(args.ckpt_every > 0)
          .callbacks(callbacks));
  torch::manual_seed(0);
  std::shared_ptr<volt::Module> model;
  if (args.configure || args.model == "gpt" || args.model == "custom") {
    if (args.model == "gpt")
      model = std::make_shared<LM>();
    else if (args.model == "custom")
      model = std::make_shared<Custom>();
    else
      model = std::make_shared<LateMLP>();
  } else if (args.device_check || args.plain_build) {
    model = std::make_shared<MLP>();  // built plainly, then moved (the init engine knows CPU and CUDA only)
  } else {
    auto scope = trainer.init_module();
    if (args.model == "cnn")
      model = std::make_shared<volt::models::FashionCNNImpl>(volt::HParams()
                                                                 .set("channels1", int64_t{4})
                                                                 .set("channels2", int64_t{8})
                                                                 .set("hidden", int64_t{16})
                                                                 .set("dropout", 0.0));
    else
      model = std::make_shared<MLP>();
  }
  if (!args.init.empty()) volt::load_state_dict(*model, volt::Checkpoint::load(args.init).state_dict);
  if (args.device_check) volt::testing::move_to_fake_device(*model);
  at::Tensor x, y;
  if (!args.data.empty()) {
    const auto data = volt::Checkpoint::load(args.data).state_dict;
    x = data["x"].to_tensor().clone();
    y = data["y"].to_tensor().clone();
  } else if (args.model == "gpt") {
    auto gen = at::detail::createCPUGenerator(1);
    const auto tokens = at::randint(64, {args.samples, 17}, gen);
    x = tokens.slice(1, 0, 16).contiguous();
    y = tokens.slice(1, 1, 17).contiguous();
  } else {
    auto gen = at::detail::createCPUGenerator(1);
    x = at::randn({args.samples, 8}, gen);
    y = x.matmul(at::randn({8, 4}, gen)).argmax(1);
  }
  std::vector<volt::Batch> batches;
  for (int64_t i = 0; i < x.size(0); i += args.batch)
    batches.emplace_back(x.slice(0, i, i + args.batch), y.slice(0, i, i + args.batch));
  // --sampler samples: a plain port of the Lightning oracle's DataLoader(dataset, batch_size), whose sampler
  // the Trainer replaces by Lightning's DistributedSampler (shuffled, seed 0); else the Trainer splits the
  // batches.
  const volt::DataLoader loader(std::make_shared<volt::TensorDataset>(x, y),
                                volt::DataLoaderOptions().batch_size(args.batch));
  if (args.no_fit)
    trainer.setup_model(*model);
  else if (args.sample_sampler)
    trainer.fit(*model, loader, {}, args.resume);
  else
    trainer.fit(*model, batches, {}, args.resume);
  // Every rank: sharded strategies gather the full weights for rank 0 to write.
  if (!args.out.empty()) trainer.save_checkpoint(args.out);
  std::cout << "{\"rank\": " << trainer.global_rank() << ", \"world_size\": " << trainer.world_size()
            << ", \"global_step\": " << trainer.global_step() << ", \"epoch\": " << trainer.current_epoch();
  const auto& metrics = trainer.callback_metrics();
  if (metrics.count("train_loss")) std::cout << ", \"train_loss\": " << metrics.at("train_loss");
  if (args.device_check)
    std::cout << ", \"checked_tensors\": " << volt::testing::DeviceCheckingGroup::checked_tensors()
              << ", \"device\": \"" << trainer.root_device() << "\"";
  std::cout << "}" << std::endl;
  return 0;
} catch (const std::exception& e) {
  std::cerr << "volt_ddp_worker: " << e.what() << std::endl;
  return 1;
}

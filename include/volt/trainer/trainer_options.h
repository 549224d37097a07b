// Options of volt::Trainer, named as Lightning's Trainer arguments:
// `volt::TrainerOptions().accelerator("cuda").precision("bf16-mixed").max_epochs(3).gradient_clip_val(1.0)`
#pragma once

#include "volt/core/enums.h"
#include "volt/core/precision.h"
#include "volt/init/init_options.h"
#include "volt/strategies/sharding_options.h"

#include <c10/util/Optional.h>
#include <torch/arg.h>

#include <chrono>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

namespace volt {

class Callback;
class Logger;
class PrecisionPlugin;
class Strategy;

/// Lightning's `strategy=`: a registered name ("ddp", or one of the user's, see volt::StrategyRegistry) or
/// a Strategy object the user built.
class StrategyChoice {
 public:
  /* implicit */ StrategyChoice(const char* name) : name_(name) {}
  /* implicit */ StrategyChoice(std::string name) : name_(std::move(name)) {}
  template <typename S, typename = std::enable_if_t<std::is_base_of_v<Strategy, S>>>
  /* implicit */ StrategyChoice(std::shared_ptr<S> strategy) : object_(std::move(strategy)) {}

  /// The name asked for; empty when an object was given.
  const std::string& name() const { return name_; }
  const std::shared_ptr<Strategy>& object() const { return object_; }

 private:
  std::string name_;
  std::shared_ptr<Strategy> object_;
};

/// Lightning's `limit_*_batches` / `val_check_interval`: an int counts batches, a double is a fraction
/// of the loader (1.0: all of it).
struct BatchLimit {
  /* implicit */ BatchLimit(double fraction = 1.0) : fraction_(fraction) {}
  /* implicit */ BatchLimit(int count) : count_(count) {}
  /* implicit */ BatchLimit(int64_t count) : count_(count) {}
  bool is_count() const { return count_.has_value(); }
  /// Batches to run of a loader of `total` batches (nullopt: unknown length; a fraction below 1.0 then
  /// needs a known length and throws volt::Error).
  int64_t resolve(c10::optional<int64_t> total, const char* option_name) const;

 private:
  c10::optional<int64_t> count_;
  double fraction_ = 1.0;
};

struct TrainerOptions {
  /// "cpu", "cuda" (or "gpu"), "auto".
  TORCH_ARG(std::string, accelerator) = "auto";
  /// Devices per node (processes per node on the CPU) to train on; -1 for all visible. More than one
  /// process: a program started plainly launches the others itself, re-running its own executable with
  /// the same arguments (as Lightning); under torchrun or SLURM their variables are read instead.
  TORCH_ARG(int64_t, devices) = 1;
  /// Nodes of a multi-node run (set MASTER_ADDR, MASTER_PORT and NODE_RANK on each, as for Lightning).
  TORCH_ARG(int64_t, num_nodes) = 1;
  /// Lightning's precision strings; an unknown one throws when set.
  TORCH_ARG(Precision, precision) = Precision("32-true");
  /// Lightning's strategy strings: "auto" (DDP for more than one process, else one device),
  /// "single_device", "ddp", "fsdp" (= "deepspeed_stage_3"), "deepspeed_stage_1", "deepspeed_stage_2", any
  /// name registered in volt::StrategyRegistry — or a Strategy object (`std::make_shared<MyStrategy>(...)`),
  /// which brings its own accelerator, devices and precision ("ddp_spawn" is refused with the reason).
  TORCH_ARG(StrategyChoice, strategy) = "auto";
  /// A precision plugin of the user's own (Lightning's `plugins=[MyPrecision(...)]`), used instead of the
  /// one `precision` names by a strategy chosen by name.
  TORCH_ARG(std::shared_ptr<PrecisionPlugin>, precision_plugin) = nullptr;
  /// The sharded strategies' units and mixed precision (auto-wrap policy, param/reduce dtypes).
  TORCH_ARG(ShardingOptions, sharding) = {};
  /// Bound of the rendezvous and of every collective: a rank that dies or never arrives becomes a
  /// volt::Error naming it after at most this long (Lightning's default: 30 minutes).
  TORCH_ARG(std::chrono::milliseconds, timeout) = std::chrono::minutes(30);
  /// Under a distributed strategy, each rank visits only its share of the training and validation data
  /// (Lightning's use_distributed_sampler): a volt::DataLoader's samples through a DistributedSampler, as
  /// Lightning replaces a loader's sampler; a loader already sharded as it is; other iterables by batches
  /// (volt::shard_for_rank).
  TORCH_ARG(bool, use_distributed_sampler) = true;
  /// Generator of init_module's parameter init (InitRng::kLibTorch for LibTorch's exact values).
  TORCH_ARG(InitRng, init_rng) = InitRng::kCounter;
  /// Where logs and checkpoints go.
  TORCH_ARG(std::string, default_root_dir) = ".";

  /// -1 with max_steps -1: 1000 epochs, as Lightning.
  TORCH_ARG(int64_t, max_epochs) = -1;
  /// Optimizer steps; -1: no limit.
  TORCH_ARG(int64_t, max_steps) = -1;
  /// Sum the gradients of this many batches per optimizer step (the loss is divided by it).
  TORCH_ARG(int64_t, accumulate_grad_batches) = 1;
  TORCH_ARG(c10::optional<double>, gradient_clip_val) = c10::nullopt;
  /// GradClipAlgorithm::kNorm (the total 2-norm of all gradients) or kValue (each element); Lightning's
  /// strings "norm" / "value" too, any other refused.
  TORCH_ARG(GradClipAlgorithm, gradient_clip_algorithm) = GradClipAlgorithm::kNorm;
  /// Validate every this many training batches (int) or this fraction of an epoch (double).
  TORCH_ARG(BatchLimit, val_check_interval) = 1.0;
  TORCH_ARG(int64_t, check_val_every_n_epoch) = 1;
  TORCH_ARG(BatchLimit, limit_train_batches) = 1.0;
  TORCH_ARG(BatchLimit, limit_val_batches) = 1.0;
  TORCH_ARG(BatchLimit, limit_test_batches) = 1.0;
  TORCH_ARG(BatchLimit, limit_predict_batches) = 1.0;
  /// Validation batches run before training, to catch bugs early; their metrics are discarded.
  TORCH_ARG(int64_t, num_sanity_val_steps) = 2;
  TORCH_ARG(int64_t, log_every_n_steps) = 50;
  /// LibTorch's deterministic algorithms (torch::use_deterministic_algorithms).
  TORCH_ARG(bool, deterministic) = false;
  TORCH_ARG(std::vector<std::shared_ptr<Callback>>, callbacks) = {};
  /// Loggers; empty with enable_logger: a CSVLogger under default_root_dir.
  TORCH_ARG(std::vector<std::shared_ptr<Logger>>, logger) = {};
  TORCH_ARG(bool, enable_logger) = true;
  TORCH_ARG(bool, enable_progress_bar) = true;
  /// Without a ModelCheckpoint among the callbacks: one that saves the last epoch, as Lightning.
  TORCH_ARG(bool, enable_checkpointing) = true;
  /// torch::manual_seed(seed) when fit/validate/test start (Lightning's seed_everything).
  TORCH_ARG(c10::optional<uint64_t>, seed) = c10::nullopt;
};

}  // namespace volt

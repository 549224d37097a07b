// A strategy (Lightning's `strategies/strategy.py`) owns where parameters live and how gradients meet:
// the root device, the init scope models are built in, model setup and placement, batch transfer,
// backward, the optimizer step, the collectives the loops need, and which rank writes checkpoints. The
// Trainer's loops call only this interface, so they stay the same whatever the strategy.
//
// Strategies are found by name in volt::StrategyRegistry (each strategy's file registers its names), or
// passed to the Trainer as objects: `volt::TrainerOptions().strategy(std::make_shared<MyStrategy>(...))`.
//
//   auto strategy = volt::make_strategy(volt::StrategyOptions().name("ddp").devices(2));
//   strategy->setup_environment();          // launches the other ranks, joins the process group
#pragma once

#include <torch/arg.h>
#include <torch/optim/optimizer.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "volt/checkpoint/checkpoint.h"
#include "volt/core/accelerator.h"
#include "volt/core/batch.h"
#include "volt/core/enums.h"
#include "volt/core/module.h"
#include "volt/distributed/process_group.h"
#include "volt/init/init_scope.h"
#include "volt/strategies/precision_plugin.h"
#include "volt/strategies/strategy_options.h"

namespace volt {

/// What Strategy::forward_context() returns: guards held while a step runs.
class ForwardContext {
 public:
  virtual ~ForwardContext() = default;
};

class Strategy {
 public:
  /// The accelerator and devices, and the precision plugin (`options.precision_plugin()`, else the one
  /// `options.precision()` names), come from `options`.
  explicit Strategy(const StrategyOptions& options = {});
  virtual ~Strategy() = default;
  Strategy(const Strategy&) = delete;
  Strategy& operator=(const Strategy&) = delete;

  /// "single_device", "ddp", ...
  virtual std::string name() const = 0;

  /// Launches the other local ranks and joins the process group (distributed strategies); once, before
  /// the first loop. A no-op for one process.
  virtual void setup_environment() {}
  virtual int64_t global_rank() const { return 0; }
  virtual int64_t local_rank() const { return 0; }
  virtual int64_t node_rank() const { return 0; }
  virtual int64_t world_size() const { return 1; }
  bool is_global_zero() const { return global_rank() == 0; }

  const Accelerator& accelerator() const { return accelerator_; }
  /// The device this process places its model on.
  virtual c10::Device root_device() const { return accelerator_.device_for_local_rank(local_rank()); }
  PrecisionPlugin& precision_plugin() { return *precision_; }
  const PrecisionPlugin& precision_plugin() const { return *precision_; }
  const StrategyOptions& options() const { return options_; }

  /// The scope of Trainer::init_module() and of configure_model(): tensors land on the root device in the
  /// precision's parameter dtype.
  virtual InitScope module_init_context(bool empty_init) const;
  /// The scope configure_model() runs in (sharded strategies: deferred, no memory until setup()).
  virtual InitScope configure_model_context() const { return module_init_context(false); }
  /// Places and converts the model once configure_model() ran (distributed strategies then make the ranks
  /// agree on it). Called at the start of every fit / validate / test / predict.
  virtual void setup(Module& model);
  /// After configure_optimizers(), before training.
  virtual void setup_optimizers(torch::optim::Optimizer& /*optimizer*/) {}
  virtual void teardown() {}

  /// A batch on the root device, floating tensors in the precision's input dtype.
  virtual Batch batch_to_device(const Batch& batch) const;
  /// Before each training_step (DDP broadcasts rank 0's buffers).
  virtual void pre_training_step(Module& /*model*/) {}
  /// Held around every training/validation/test/predict step: the precision's autocast (sharded
  /// strategies also gather a unit's parameters when the step first uses them).
  virtual std::unique_ptr<ForwardContext> forward_context();
  /// Backward through the precision plugin; `sync_gradients` is false on the micro-batches of gradient
  /// accumulation that end in no optimizer step (DDP then skips its all-reduce, as `no_sync`).
  virtual void backward(const at::Tensor& loss, bool sync_gradients);
  /// The optimizer step through the precision plugin (unscale, clip, skip); returns whether it stepped.
  virtual bool optimizer_step(torch::optim::Optimizer& optimizer, const std::function<void()>& clip);
  /// Clips the gradients of `model`'s parameters by their total 2-norm or by value; each tied parameter
  /// counts once.
  virtual void clip_gradients(Module& model, double value, GradClipAlgorithm algorithm);

  /// Collectives (identities for one process). `reduce` with kMean averages over the ranks.
  virtual at::Tensor reduce(const at::Tensor& tensor, ReduceOp op = ReduceOp::kMean);
  double reduce(double value, ReduceOp op = ReduceOp::kMean);
  virtual std::vector<at::Tensor> all_gather(const at::Tensor& tensor);
  virtual void broadcast(at::Tensor& tensor, int64_t src = 0);
  /// Rank `src`'s string on every rank.
  virtual std::string broadcast(const std::string& text, int64_t src = 0);
  virtual void barrier(const std::string& /*name*/ = "") {}
  /// Whether `decision` holds on all ranks (`all`) or on any rank: ranks must stop together.
  bool reduce_boolean_decision(bool decision, bool all = true);

  /// The model's and the optimizer's state as a single process holds them (sharded strategies gather).
  virtual Value model_state_dict(Module& model);
  virtual Value optimizer_state_dict(torch::optim::Optimizer& optimizer);
  /// Loads a full state (as model_state_dict gives); sharded strategies keep their rows.
  virtual void load_model_state_dict(Module& model, const Value& state);
  virtual void load_optimizer_state_dict(torch::optim::Optimizer& optimizer, const Value& state);

  /// Writes `checkpoint` atomically: global rank zero writes, the others wait for it.
  virtual void save_checkpoint(const Checkpoint& checkpoint, const std::string& path);
  /// Every rank reads the file.
  virtual Checkpoint load_checkpoint(const std::string& path) const;

 protected:
  StrategyOptions options_;
  Accelerator accelerator_;
  std::shared_ptr<PrecisionPlugin> precision_;
  InitRng init_rng_;
};

/// Parameters of `module` that require grad, each tied tensor once, in registration order.
std::vector<at::Tensor> trainable_parameters(const torch::nn::Module& module);

}  // namespace volt

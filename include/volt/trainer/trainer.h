// The Trainer: runs Lightning's loops (fit / validate / test / predict) with callbacks, loggers and exact
// resume from checkpoints. Where parameters live, how gradients meet and what a precision means belong to
// its strategy and precision plugin (strategies/), so the loops are the same for one process and for DDP.
//
//   volt::Trainer trainer(volt::TrainerOptions().max_epochs(3).precision("bf16-mixed"));
//   auto model = std::make_shared<Net>();
//   trainer.fit(*model, train_loader, val_loader);
//   trainer.test(*model, test_loader);
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "volt/core/accelerator.h"
#include "volt/core/enums.h"
#include "volt/core/module.h"
#include "volt/data/batch_source.h"
#include "volt/init/init_scope.h"
#include "volt/strategies/strategy.h"
#include "volt/trainer/callback.h"
#include "volt/trainer/logger.h"
#include "volt/trainer/trainer_options.h"

namespace volt {

namespace detail {
class MetricStore;
class CheckpointConnector;
struct LoopPosition;
}  // namespace detail

class Trainer {
 public:
  explicit Trainer(TrainerOptions options = {});
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  /// Lightning's `trainer.init_module()`: the strategy's init scope, in which tensors land on the root
  /// device in the precision's parameter dtype. With `empty_init`, parameters get memory but no random init
  /// (load a checkpoint into them next).
  /// `{ auto scope = trainer.init_module(); auto model = GPT(cfg); }`
  InitScope init_module(bool empty_init = false) const;

  /// Trains `model`: the strategy's environment (launching the other ranks under DDP), configure_model()
  /// inside the strategy's init scope, the strategy's setup (placement, precision, rank 0's weights
  /// everywhere), configure_optimizers(), then the epoch loop with validation. `ckpt_path` resumes exactly
  /// (weights, optimizer, schedule, epoch, step, callbacks, RNG), including from a checkpoint saved
  /// mid-epoch. Under a distributed strategy each rank sees its own shard of `train` and `val`
  /// (TrainerOptions::use_distributed_sampler). A module owned by a std::shared_ptr (TORCH_MODULE holders,
  /// make_shared) is held by the Trainer from here on; any other is let go when the call returns.
  void fit(Module& model, const BatchSource& train, const BatchSource& val = {},
           const std::string& ckpt_path = "");
  /// One pass of validation_step over `data`; returns the epoch metrics (as Lightning's `validate`).
  Metrics validate(Module& model, const BatchSource& data);
  Metrics test(Module& model, const BatchSource& data);
  /// predict_step's outputs, in order.
  std::vector<at::Tensor> predict(Module& model, const BatchSource& data);

  /// Fabric's setup(): the strategy's environment (launching the other ranks), configure_model() in its
  /// init scope and the strategy's setup (placement, rank 0's weights everywhere, sharding), without a
  /// loop — so that save_checkpoint (a DCP directory under FSDP's "sharded" state_dict_type) and
  /// load_checkpoint work on given weights: `trainer.setup_model(model); trainer.save_checkpoint("run/w")`.
  void setup_model(Module& model);
  /// Fabric's load(): `path`'s weights into the model of setup_model() (or of the last run), through the
  /// strategy (under FSDP each rank reads its rows of a DCP directory); returns the whole checkpoint.
  Checkpoint load_checkpoint(const std::string& path);

  /// The checkpoint of the current state, in Lightning's layout (what save_checkpoint writes).
  Checkpoint dump_checkpoint();
  /// Writes dump_checkpoint() atomically (.ckpt / .pt: everything; .safetensors: weights only).
  void save_checkpoint(const std::string& path);

  const TrainerOptions& options() const { return options_; }
  Strategy& strategy() const { return *strategy_; }
  const Accelerator& accelerator() const { return strategy_->accelerator(); }
  const Precision& precision() const { return strategy_->precision_plugin().precision(); }
  /// The device this process places its model on.
  c10::Device root_device() const { return strategy_->root_device(); }
  int64_t global_rank() const { return strategy_->global_rank(); }
  int64_t local_rank() const { return strategy_->local_rank(); }
  int64_t world_size() const { return strategy_->world_size(); }
  /// Only global rank zero logs, draws the progress bar and writes checkpoints.
  bool is_global_zero() const { return strategy_->is_global_zero(); }

  // State that callbacks read.
  int64_t current_epoch() const { return current_epoch_; }
  /// Optimizer steps taken.
  int64_t global_step() const { return global_step_; }
  bool sanity_checking() const { return sanity_checking_; }
  /// Stage::kFit, kValidate, kTest, kPredict, or kNone between runs (compares equal to Lightning's strings).
  Stage stage() const { return stage_; }
  bool should_stop() const { return should_stop_; }
  /// Ends fit after the current batch (EarlyStopping calls this).
  void request_stop() { should_stop_ = true; }
  /// The latest value of every logged metric (epoch means once an epoch ended).
  const Metrics& callback_metrics() const;
  const Metrics& logged_metrics() const;
  const Metrics& progress_bar_metrics() const;
  /// Lightning's `estimated_stepping_batches`: the optimizer steps fit will take (max_steps, or this rank's
  /// batches per epoch / accumulate_grad_batches, rounded up, times max_epochs), for schedules built in
  /// configure_optimizers(). Throws volt::Error outside fit or when the loader's length is unknown.
  int64_t estimated_stepping_batches() const;
  /// Batches this epoch will run, when the loader's length is known.
  c10::optional<int64_t> num_training_batches() const { return num_training_batches_; }
  c10::optional<int64_t> num_eval_batches() const { return num_eval_batches_; }
  const std::vector<std::shared_ptr<Logger>>& loggers() const { return loggers_; }
  const std::vector<std::shared_ptr<Callback>>& callbacks() const { return callbacks_; }
  /// The first logger's folder, else default_root_dir.
  std::string log_dir() const;
  torch::optim::Optimizer* optimizer() const { return optim_.optimizer.get(); }
  LRScheduler* lr_scheduler() const { return optim_.scheduler.get(); }
  const OptimizerConfig& optimizer_config() const { return optim_; }
  /// The model of the current or last run (nullptr when none, or when it was not owned by a shared_ptr
  /// and its run has ended).
  Module* model() const { return model_; }

 private:
  friend class detail::CheckpointConnector;
  void setup(Module& model, Stage stage);
  /// This rank's share of `source` (volt::shard_for_rank); `training`: the fit loop's training loader.
  BatchSource distributed(const BatchSource& source, bool training = false) const;
  void teardown(const std::string& status);
  void run_training_epoch(const BatchSource& train, const BatchSource& val,
                          const detail::LoopPosition* resume);
  /// One training batch (Lightning's training_batch_loop): forward, backward, and the optimizer step when
  /// the batch ends an accumulation (returned), step metrics to the loggers.
  bool run_training_batch(const Batch& raw, int64_t batch_idx, bool last);
  /// Validation inside fit (mid-epoch or at the epoch's end), back in training mode after it.
  void validate_within_fit(const BatchSource& val);
  void optimizer_step(Module& model);
  void catch_up_epoch_schedule(int64_t finished_epoch);
  Metrics evaluate(Module& model, const BatchSource& data, Stage stage);
  Metrics run_evaluation(const BatchSource& data, Stage stage, int64_t limit);
  template <typename F>
  void each_callback(F&& f) {
    for (auto& callback : callbacks_) f(*callback);
  }
  void log_to_loggers(const Metrics& metrics);

  TrainerOptions options_;
  std::shared_ptr<Strategy> strategy_;
  std::vector<std::shared_ptr<Callback>> callbacks_;
  std::vector<std::shared_ptr<Logger>> loggers_;
  std::unique_ptr<detail::MetricStore> metrics_;
  std::shared_ptr<Module> model_owner_;  // keeps the model alive while the Trainer may use it
  Module* model_ = nullptr;
  std::string log_dir_;  // rank zero's, on every rank (the loggers live on rank zero only)
  OptimizerConfig optim_;
  Stage stage_ = Stage::kNone;
  int64_t current_epoch_ = 0;
  int64_t global_step_ = 0;
  int64_t batches_done_ = 0;  // training batches of the current epoch
  int64_t total_batches_ = 0;
  bool epoch_batches_complete_ = false;
  bool in_epoch_ = false;  // inside run_training_epoch: a checkpoint then is taken within current_epoch_
  at::Tensor epoch_start_rng_;
  bool sanity_checking_ = false;
  bool should_stop_ = false;
  bool hparams_logged_ = false;
  c10::optional<int64_t> num_training_batches_, num_eval_batches_;
};

}  // namespace volt

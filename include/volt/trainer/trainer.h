// The Trainer: owns the accelerator, precision and strategy of a run, opens the init scope in which models
// are built directly on the target device and in the target precision, and runs Lightning's loops
// (fit / validate / test / predict) with callbacks, loggers and exact resume from checkpoints.
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
#include "volt/core/module.h"
#include "volt/data/batch_source.h"
#include "volt/init/init_scope.h"
#include "volt/trainer/callback.h"
#include "volt/trainer/logger.h"
#include "volt/trainer/trainer_options.h"

namespace volt {

class GradScaler;
namespace detail {
class MetricStore;
struct LoopPosition;
}  // namespace detail

class Trainer {
 public:
  explicit Trainer(TrainerOptions options = {});
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  /// Lightning's `trainer.init_module()`: inside the returned scope, tensors land on the root device in
  /// the precision's parameter dtype. With `empty_init`, parameters get memory but no random init (load
  /// a checkpoint into them next).
  /// `{ auto scope = trainer.init_module(); auto model = GPT(cfg); }`
  InitScope init_module(bool empty_init = false) const;

  /// Trains `model`: configure_model() inside the strategy's init scope, the precision's conversion once,
  /// configure_optimizers(), then the epoch loop with validation. `ckpt_path` resumes exactly (weights,
  /// optimizer, schedule, epoch, step, callbacks, RNG), including from a checkpoint saved mid-epoch.
  void fit(Module& model, const BatchSource& train, const BatchSource& val = {},
           const std::string& ckpt_path = "");
  /// One pass of validation_step over `data`; returns the epoch metrics (as Lightning's `validate`).
  Metrics validate(Module& model, const BatchSource& data);
  Metrics test(Module& model, const BatchSource& data);
  /// predict_step's outputs, in order.
  std::vector<at::Tensor> predict(Module& model, const BatchSource& data);

  /// The checkpoint of the current state, in Lightning's layout (what save_checkpoint writes).
  Checkpoint dump_checkpoint();
  /// Writes dump_checkpoint() atomically (.ckpt / .pt: everything; .safetensors: weights only).
  void save_checkpoint(const std::string& path);

  const TrainerOptions& options() const { return options_; }
  const Accelerator& accelerator() const { return accelerator_; }
  const Precision& precision() const { return options_.precision(); }
  /// The device this process places its model on.
  c10::Device root_device() const { return accelerator_.device_for_local_rank(0); }

  // State that callbacks read.
  int64_t current_epoch() const { return current_epoch_; }
  /// Optimizer steps taken.
  int64_t global_step() const { return global_step_; }
  bool sanity_checking() const { return sanity_checking_; }
  /// "fit", "validate", "test", "predict" or "" between runs.
  const std::string& stage() const { return stage_; }
  bool should_stop() const { return should_stop_; }
  /// Ends fit after the current batch (EarlyStopping calls this).
  void request_stop() { should_stop_ = true; }
  /// The latest value of every logged metric (epoch means once an epoch ended).
  const Metrics& callback_metrics() const;
  const Metrics& logged_metrics() const;
  const Metrics& progress_bar_metrics() const;
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
  Module* model() const { return model_; }

 private:
  void setup(Module& model, const std::string& stage);
  void teardown(const std::string& status);
  void run_training_epoch(const BatchSource& train, const BatchSource& val,
                          const detail::LoopPosition* resume);
  void optimizer_step(Module& model);
  void catch_up_epoch_schedule(int64_t finished_epoch);
  Metrics evaluate(Module& model, const BatchSource& data, const std::string& stage);
  Metrics run_evaluation(const BatchSource& data, const std::string& stage, int64_t limit);
  void restore(const std::string& ckpt_path, detail::LoopPosition& position);
  template <typename F>
  void each_callback(F&& f);

  TrainerOptions options_;
  Accelerator accelerator_;
  std::vector<std::shared_ptr<Callback>> callbacks_;
  std::vector<std::shared_ptr<Logger>> loggers_;
  std::unique_ptr<detail::MetricStore> metrics_;
  std::unique_ptr<GradScaler> scaler_;
  Module* model_ = nullptr;
  OptimizerConfig optim_;
  std::string stage_;
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

// volt::Module: a torch::nn::Module with Lightning's hooks. Layers are registered as usual; the Trainer
// calls the steps, builds the optimizers from configure_optimizers(), and collects what log() records.
//
//   struct Net : volt::Module {
//     Net() { fc = register_module("fc", torch::nn::Linear(784, 10)); }
//     torch::Tensor training_step(const volt::Batch& b, int64_t) override {
//       auto loss = torch::cross_entropy_loss(fc(b.data.flatten(1)), b.target);
//       log("train_loss", loss, volt::LogOptions().prog_bar(true));
//       return loss;
//     }
//     volt::OptimizerConfig configure_optimizers() override {
//       return volt::OptimizerConfig(std::make_shared<torch::optim::Adam>(parameters()));
//     }
//     torch::nn::Linear fc{nullptr};
//   };
#pragma once

#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>

#include <map>
#include <memory>
#include <string>

#include "volt/checkpoint/checkpoint.h"
#include "volt/checkpoint/hparams.h"
#include "volt/checkpoint/state_dict.h"
#include "volt/core/batch.h"
#include "volt/core/enums.h"
#include "volt/optim/lr_scheduler.h"

namespace volt {

class Trainer;

/// How a logged value is shown and aggregated (Lightning's `self.log` arguments). Unset on_step /
/// on_epoch take Lightning's defaults: per step in training_step, per epoch in the other steps.
struct LogOptions {
  TORCH_ARG(bool, prog_bar) = false;
  TORCH_ARG(c10::optional<bool>, on_step) = c10::nullopt;
  TORCH_ARG(c10::optional<bool>, on_epoch) = c10::nullopt;
  /// Send to the loggers (false: only callbacks and the progress bar see it).
  TORCH_ARG(bool, logger) = true;
  /// Examples the value averages over, for the epoch mean; default: the current batch's size.
  TORCH_ARG(c10::optional<int64_t>, batch_size) = c10::nullopt;
  /// Average the value across ranks when it is logged (every rank must log it).
  TORCH_ARG(bool, sync_dist) = false;
};

/// What configure_optimizers() returns: an optimizer and, optionally, a schedule stepped every epoch or
/// every optimizer step.
struct OptimizerConfig {
  OptimizerConfig() = default;
  explicit OptimizerConfig(std::shared_ptr<torch::optim::Optimizer> optimizer,
                           std::shared_ptr<LRScheduler> scheduler = nullptr)
      : optimizer(std::move(optimizer)), scheduler(std::move(scheduler)) {}
  std::shared_ptr<torch::optim::Optimizer> optimizer;
  std::shared_ptr<LRScheduler> scheduler;
  /// Interval::kEpoch or kStep (or Lightning's lr_scheduler "interval" strings, "epoch" / "step").
  Interval interval = Interval::kEpoch;
  /// Step the schedule every `frequency` intervals.
  int64_t frequency = 1;
};

/// Metric name -> value, as the Trainer reports them.
using Metrics = std::map<std::string, double>;

/// Where Module::log() goes: the Trainer's metric store while a loop runs.
class LogSink {
 public:
  virtual ~LogSink() = default;
  virtual void log(const std::string& name, double value, const LogOptions& options) = 0;
};

class Module : public torch::nn::Module, public BufferPersistence {
 public:
  using torch::nn::Module::Module;

  using torch::nn::Module::register_buffer;
  /// PyTorch's `register_buffer(name, tensor, persistent)`. A non-persistent buffer (a causal mask, a
  /// rotary table: values the model computes itself) follows the module — `.to`, init scopes, the
  /// Trainer's placement — but is left out of state_dict(), load_state_dict() and checkpoints, so a strict
  /// load of PyTorch's state dict of the same model passes.
  at::Tensor& register_buffer(std::string name, at::Tensor tensor, bool persistent);

  /// Returns the loss to minimize.
  virtual at::Tensor training_step(const Batch& batch, int64_t batch_idx) = 0;
  virtual void validation_step(const Batch& /*batch*/, int64_t /*batch_idx*/) {}
  virtual void test_step(const Batch& /*batch*/, int64_t /*batch_idx*/) {}
  /// What Trainer::predict collects per batch.
  virtual at::Tensor predict_step(const Batch& batch, int64_t batch_idx);
  virtual OptimizerConfig configure_optimizers() = 0;
  /// Called by Trainer::fit inside the strategy's init scope: create large layers here so that they are
  /// built on the target device and precision (and, with sharded strategies, one shard per rank).
  /// It must be idempotent: fit may be called again on a configured module.
  virtual void configure_model() {}

  virtual void on_fit_start() {}
  virtual void on_fit_end() {}
  virtual void on_train_epoch_start() {}
  virtual void on_train_epoch_end() {}
  virtual void on_validation_epoch_end() {}
  virtual void on_test_epoch_end() {}
  /// Add to the checkpoint being saved (its `extra` keeps any key).
  virtual void on_save_checkpoint(Checkpoint& /*checkpoint*/) {}
  virtual void on_load_checkpoint(const Checkpoint& /*checkpoint*/) {}

  /// Records a metric for the loggers, callbacks (ModelCheckpoint's monitor) and the progress bar.
  void log(const std::string& name, double value, const LogOptions& options = {});
  void log(const std::string& name, const at::Tensor& value, const LogOptions& options = {});

  /// Lightning's save_hyperparameters(): saved under the checkpoint's "hyper_parameters", so that
  /// load_from_checkpoint<T> can construct the module again.
  void save_hyperparameters(HParams hparams) { hparams_ = std::move(hparams); }
  const HParams& hparams() const { return hparams_; }

  /// Set by the Trainer while it runs this module (nullptr otherwise: log() is then a no-op).
  void set_log_sink(LogSink* sink) { log_sink_ = sink; }

  /// The Trainer running or last run with this module (Lightning's `self.trainer`); throws volt::Error
  /// when there is none (outside fit / validate / test / predict, or after that Trainer is gone).
  Trainer& trainer() const;
  bool has_trainer() const { return trainer_ != nullptr; }
  /// The Trainer's, as Lightning's `self.current_epoch`, `self.global_step`, `self.device` and
  /// `self.logger.log_dir`; throw volt::Error without a Trainer.
  int64_t current_epoch() const;
  int64_t global_step() const;
  c10::Device device() const;
  std::string log_dir() const;
  /// Set by the Trainer (nullptr when it lets the module go).
  void set_trainer(Trainer* trainer) { trainer_ = trainer; }

 private:
  HParams hparams_;
  LogSink* log_sink_ = nullptr;
  Trainer* trainer_ = nullptr;
};

}  // namespace volt

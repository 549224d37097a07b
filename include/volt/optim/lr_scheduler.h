// Learning-rate schedules with PyTorch's state, so that Lightning's "lr_schedulers" checkpoint entries
// move both ways and a resumed run continues the schedule exactly. LibTorch's own torch::optim::LRScheduler
// keeps its step count private, so it cannot be checkpointed.
#pragma once

#include <torch/optim/optimizer.h>

#include <string>
#include <vector>

#include "volt/checkpoint/value.h"

namespace volt {

class LRScheduler {
 public:
  explicit LRScheduler(torch::optim::Optimizer& optimizer);
  virtual ~LRScheduler() = default;

  /// Advances one epoch (or step, per OptimizerConfig::interval) and sets the optimizer's learning rates.
  void step();
  int64_t last_epoch() const { return last_epoch_; }
  /// The learning rate of each param group after the last step.
  const std::vector<double>& last_lr() const { return last_lr_; }
  /// "StepLR", "CosineAnnealingLR": PyTorch's class name.
  virtual std::string name() const = 0;

  /// PyTorch's `scheduler.state_dict()` keys: base_lrs, last_epoch, _step_count, _last_lr and the
  /// schedule's own arguments.
  Value state_dict() const;
  /// Restores the position in the schedule and the optimizer's current learning rates.
  void load_state_dict(const Value& state);

 protected:
  /// Closed form: the learning rate of each group at `epoch`.
  virtual std::vector<double> lr_at(int64_t epoch) const = 0;
  virtual void save_arguments(Dict& out) const = 0;
  virtual void load_arguments(const Value& state) = 0;
  /// Called by subclasses' constructors, once their arguments are set (PyTorch's initial step).
  void initial_step();
  std::vector<double> base_lrs_;

 private:
  void apply(const std::vector<double>& lrs);
  torch::optim::Optimizer& optimizer_;
  int64_t last_epoch_ = -1;
  int64_t step_count_ = 0;
  std::vector<double> last_lr_;
};

/// `lr = base_lr * gamma ^ (epoch / step_size)`, as torch.optim.lr_scheduler.StepLR.
class StepLR : public LRScheduler {
 public:
  StepLR(torch::optim::Optimizer& optimizer, int64_t step_size, double gamma = 0.1);
  std::string name() const override { return "StepLR"; }

 protected:
  std::vector<double> lr_at(int64_t epoch) const override;
  void save_arguments(Dict& out) const override;
  void load_arguments(const Value& state) override;

 private:
  int64_t step_size_;
  double gamma_;
};

/// `lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2`, as CosineAnnealingLR.
class CosineAnnealingLR : public LRScheduler {
 public:
  CosineAnnealingLR(torch::optim::Optimizer& optimizer, int64_t t_max, double eta_min = 0.0);
  std::string name() const override { return "CosineAnnealingLR"; }

 protected:
  std::vector<double> lr_at(int64_t epoch) const override;
  void save_arguments(Dict& out) const override;
  void load_arguments(const Value& state) override;

 private:
  int64_t t_max_;
  double eta_min_;
};

/// The learning rate of each param group, as optimizers keep it.
std::vector<double> learning_rates(const torch::optim::Optimizer& optimizer);

}  // namespace volt

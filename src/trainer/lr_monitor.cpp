#include "volt/trainer/lr_monitor.h"

#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/sgd.h>

#include "volt/error.h"
#include "volt/trainer/trainer.h"

namespace volt {
namespace {
std::string optimizer_name(const torch::optim::Optimizer& o) {
  if (dynamic_cast<const torch::optim::AdamW*>(&o)) return "AdamW";
  if (dynamic_cast<const torch::optim::Adam*>(&o)) return "Adam";
  if (dynamic_cast<const torch::optim::SGD*>(&o)) return "SGD";
  return "Optimizer";
}
}  // namespace

LearningRateMonitor::LearningRateMonitor(std::string logging_interval)
    : logging_interval_(std::move(logging_interval)) {
  VOLT_CHECK(logging_interval_.empty() || logging_interval_ == "epoch" || logging_interval_ == "step",
             "LearningRateMonitor logging_interval '", logging_interval_,
             "': use \"epoch\", \"step\" or \"\"");
}

std::string LearningRateMonitor::interval(const Trainer& trainer) const {
  if (!logging_interval_.empty()) return logging_interval_;
  // Without an explicit interval, follow the schedule's.
  return trainer.lr_scheduler() != nullptr ? trainer.optimizer_config().interval.name() : "epoch";
}

void LearningRateMonitor::log(Trainer& trainer) {
  const auto* optimizer = trainer.optimizer();
  if (optimizer == nullptr) return;
  Metrics metrics;
  const std::string name = "lr-" + optimizer_name(*optimizer);
  const auto lrs = learning_rates(*optimizer);
  for (size_t i = 0; i < lrs.size(); ++i)
    metrics[i == 0 ? name : name + "/pg" + std::to_string(i + 1)] = lrs[i];
  for (auto& logger : trainer.loggers()) logger->log_metrics(metrics, trainer.global_step());
}

void LearningRateMonitor::on_train_epoch_start(Trainer& trainer, Module&) {
  if (interval(trainer) == "epoch") log(trainer);
}

void LearningRateMonitor::on_train_batch_end(Trainer& trainer, Module&, int64_t) {
  if (interval(trainer) == "step") log(trainer);
}

}  // namespace volt

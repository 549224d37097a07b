// Lightning's LearningRateMonitor: sends each optimizer's learning rate to the loggers ("lr-Adam", and
// "lr-Adam/pg1" for further param groups) every epoch or every step.
#pragma once

#include <string>

#include "volt/trainer/callback.h"

namespace volt {

class LearningRateMonitor : public Callback {
 public:
  /// "epoch", "step", or "" (the scheduler's own interval; every epoch without one).
  explicit LearningRateMonitor(std::string logging_interval = "");

  void on_train_epoch_start(Trainer& trainer, Module& model) override;
  void on_train_batch_end(Trainer& trainer, Module& model, int64_t batch_idx) override;

 private:
  void log(Trainer& trainer);
  std::string interval(const Trainer& trainer) const;
  std::string logging_interval_;
};

}  // namespace volt

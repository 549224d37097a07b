// Lightning's EarlyStopping: ends fit when a monitored validation metric has not improved by `min_delta`
// for `patience` validation runs.
#pragma once

#include <torch/arg.h>

#include <cmath>
#include <string>

#include "volt/trainer/callback.h"

namespace volt {

struct EarlyStoppingOptions {
  explicit EarlyStoppingOptions(std::string monitor) : monitor_(std::move(monitor)) {}
  TORCH_ARG(std::string, monitor);
  TORCH_ARG(double, min_delta) = 0.0;
  TORCH_ARG(int64_t, patience) = 3;
  /// "min" or "max".
  TORCH_ARG(std::string, mode) = "min";
  /// A missing metric is an error (false: the check is skipped).
  TORCH_ARG(bool, strict) = true;
};

class EarlyStopping : public Callback {
 public:
  explicit EarlyStopping(EarlyStoppingOptions options);

  void on_validation_end(Trainer& trainer, Module& model) override;

  std::string state_key() const override;
  Value state_dict() const override;
  void load_state_dict(const Value& state) override;

  int64_t wait_count() const { return wait_count_; }
  /// The epoch fit stopped in (0 until it stops).
  int64_t stopped_epoch() const { return stopped_epoch_; }
  double best_score() const { return best_score_; }

 private:
  EarlyStoppingOptions options_;
  int64_t wait_count_ = 0;
  int64_t stopped_epoch_ = 0;
  double best_score_;
};

}  // namespace volt

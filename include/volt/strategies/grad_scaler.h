// Dynamic loss scaling for "16-mixed" (LibTorch has no C++ GradScaler): the loss is multiplied by a scale
// before backward so that float16 gradients do not underflow; a step whose gradients are not finite is
// skipped and the scale backs off, and after `growth_interval` good steps it grows.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/arg.h>
#include <torch/optim/optimizer.h>

#include "volt/checkpoint/value.h"

namespace volt {

struct GradScalerOptions {
  TORCH_ARG(double, init_scale) = 65536.0;
  TORCH_ARG(double, growth_factor) = 2.0;
  TORCH_ARG(double, backoff_factor) = 0.5;
  TORCH_ARG(int64_t, growth_interval) = 2000;
};

class GradScaler {
 public:
  explicit GradScaler(GradScalerOptions options = {});

  at::Tensor scale(const at::Tensor& loss) const { return loss * scale_; }
  /// Divides every gradient by the scale (once per step, before clipping); returns whether all are finite.
  bool unscale(torch::optim::Optimizer& optimizer);
  /// Steps the optimizer unless the gradients were not finite; then updates the scale. Returns whether
  /// the step was taken.
  bool step(torch::optim::Optimizer& optimizer);
  double current_scale() const { return scale_; }
  int64_t skipped_steps() const { return skipped_; }

  int64_t growth_tracker() const { return growth_tracker_; }

  /// PyTorch's GradScaler.state_dict(): {"scale", "growth_factor", "backoff_factor", "growth_interval",
  /// "_growth_tracker"}, so that a scaler moves between volt and PyTorch (Lightning's "MixedPrecision" key).
  Value state_dict() const;
  /// Restores what state_dict() (volt's or PyTorch's) gave; a missing key is a volt::Error naming it.
  void load_state_dict(const Value& state);

 private:
  GradScalerOptions options_;
  double scale_;
  int64_t growth_tracker_ = 0;
  int64_t skipped_ = 0;
  bool unscaled_ = false;
  bool finite_ = true;
};

}  // namespace volt

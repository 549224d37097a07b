#include "volt/strategies/grad_scaler.h"

#include <torch/torch.h>

namespace volt {

GradScaler::GradScaler(GradScalerOptions options) : options_(options), scale_(options.init_scale()) {}

bool GradScaler::unscale(torch::optim::Optimizer& optimizer) {
  if (unscaled_) return finite_;
  torch::NoGradGuard no_grad;
  const double inverse = 1.0 / scale_;
  bool finite = true;
  for (auto& group : optimizer.param_groups())
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      auto& g = p.mutable_grad();
      g.mul_(inverse);
      // One host sync per tensor; the CUDA fused kernel for this is not in LibTorch 1.13's C++ API.
      if (finite && !torch::isfinite(g).all().item<bool>()) finite = false;
    }
  unscaled_ = true;
  finite_ = finite;
  return finite;
}

bool GradScaler::step(torch::optim::Optimizer& optimizer) {
  const bool finite = unscale(optimizer);
  if (finite) {
    optimizer.step();
    if (++growth_tracker_ >= options_.growth_interval()) {
      scale_ *= options_.growth_factor();
      growth_tracker_ = 0;
    }
  } else {
    ++skipped_;
    scale_ *= options_.backoff_factor();
    growth_tracker_ = 0;
  }
  unscaled_ = false;
  return finite;
}

}  // namespace volt

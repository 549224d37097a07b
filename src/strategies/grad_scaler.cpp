#include "volt/strategies/grad_scaler.h"

#include <torch/torch.h>

#include "volt/error.h"

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

Value GradScaler::state_dict() const {
  Value state = Value::dict();
  state.to_dict().set("scale", scale_);
  state.to_dict().set("growth_factor", options_.growth_factor());
  state.to_dict().set("backoff_factor", options_.backoff_factor());
  state.to_dict().set("growth_interval", options_.growth_interval());
  state.to_dict().set("_growth_tracker", growth_tracker_);
  return state;
}

void GradScaler::load_state_dict(const Value& state) {
  VOLT_CHECK(state.is_dict(), "a GradScaler state is a dict (PyTorch's GradScaler.state_dict()), not a ",
             kind_name(state.kind()));
  const auto field = [&](const char* key) -> const Value& {
    const Value* value = state.to_dict().find(Value(key));
    VOLT_CHECK(value != nullptr, "the GradScaler state has no '", key,
               "' (PyTorch's GradScaler.state_dict() holds scale, growth_factor, backoff_factor, ",
               "growth_interval and _growth_tracker): the checkpoint is incomplete");
    return *value;
  };
  const auto number = [&](const char* key) {
    const Value& v = field(key);
    VOLT_CHECK(v.is_double() || v.is_int(), "the GradScaler state's '", key, "' is a ", kind_name(v.kind()),
               ", not a number");
    return v.is_double() ? v.to_double() : static_cast<double>(v.to_int());
  };
  scale_ = number("scale");
  options_.growth_factor(number("growth_factor"));
  options_.backoff_factor(number("backoff_factor"));
  options_.growth_interval(static_cast<int64_t>(number("growth_interval")));
  growth_tracker_ = static_cast<int64_t>(number("_growth_tracker"));
}

}  // namespace volt

#include "volt/strategies/precision_plugin.h"

#include <torch/torch.h>

#include "volt/core/parameters.h"
#include "volt/error.h"

namespace volt {

PrecisionPlugin::PrecisionPlugin(Precision precision, c10::DeviceType device)
    : precision_(std::move(precision)), device_type_(device) {
  VOLT_CHECK(!(precision_.name() == "16-mixed" && device == c10::kCPU),
             "precision '16-mixed' needs CUDA (LibTorch's CPU autocast computes in bfloat16 only): use "
             "'bf16-mixed' on the CPU");
  if (precision_.name() == "16-mixed") scaler_ = std::make_unique<GradScaler>();
}

void PrecisionPlugin::convert_module(torch::nn::Module& module, c10::Device device) const {
  torch::NoGradGuard no_grad;
  const auto dtype = precision_.param_dtype();
  auto move = [&](at::Tensor& t) {
    at::Tensor moved = at::isFloatingType(t.scalar_type()) ? t.to(device, dtype) : t.to(device);
    if (!moved.is_same(t)) t.set_data(moved);
  };
  for (auto& p : unique_parameters(module)) move(p);  // a tied tensor once
  for (auto& b : unique_buffers(module)) move(b);
}

c10::optional<c10::ScalarType> PrecisionPlugin::input_dtype() const {
  return precision_.is_mixed() ? c10::nullopt : c10::optional<c10::ScalarType>(precision_.param_dtype());
}

std::unique_ptr<AutocastGuard> PrecisionPlugin::forward_context() const {
  if (!precision_.is_mixed()) return nullptr;
  return std::make_unique<AutocastGuard>(device_type_, *precision_.autocast_dtype());
}

void PrecisionPlugin::backward(const at::Tensor& loss) { (scaler_ ? scaler_->scale(loss) : loss).backward(); }

bool PrecisionPlugin::optimizer_step(torch::optim::Optimizer& optimizer, const std::function<void()>& clip) {
  const bool finite = scaler_ ? scaler_->unscale(optimizer) : true;
  if (finite && clip) clip();
  if (scaler_) return scaler_->step(optimizer);
  optimizer.step();
  return true;
}

void PrecisionPlugin::save_state(Dict& into) const {
  if (!scaler_) return;
  into.set("grad_scaler_scale", scaler_->current_scale());
  into.set("grad_scaler_growth_tracker", static_cast<int64_t>(scaler_->growth_tracker()));
}

void PrecisionPlugin::load_state(const Dict& from) {
  if (!scaler_ || !from.contains(Value("grad_scaler_scale"))) return;
  scaler_->restore((*from.find(Value("grad_scaler_scale"))).to_double(),
                   (*from.find(Value("grad_scaler_growth_tracker"))).to_int());
}

}  // namespace volt

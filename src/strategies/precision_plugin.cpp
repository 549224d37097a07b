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

Value PrecisionPlugin::state_dict() const { return scaler_ ? scaler_->state_dict() : Value::dict(); }

void PrecisionPlugin::load_state_dict(const Value& state) {
  if (scaler_) scaler_->load_state_dict(state);
}

std::string PrecisionPlugin::state_key() const {
  return precision_.is_mixed() ? "MixedPrecision" : "Precision";
}

void PrecisionPlugin::on_save_checkpoint(Checkpoint& checkpoint) const {
  const Value state = state_dict();
  if (!state.is_dict() || !state.to_dict().empty()) checkpoint.extra.to_dict().set(state_key(), state);
}

void PrecisionPlugin::on_load_checkpoint(const Checkpoint& checkpoint) {
  if (const Value* state = checkpoint.extra.to_dict().find(Value(state_key()))) load_state_dict(*state);
}

}  // namespace volt

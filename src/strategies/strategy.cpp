#include "volt/strategies/strategy.h"

#include <torch/torch.h>

#include "volt/checkpoint/load_state_dict.h"
#include "volt/checkpoint/state_dict.h"
#include "volt/core/parameters.h"
#include "volt/error.h"
#include "volt/optim/optimizer_state.h"

namespace volt {

std::vector<at::Tensor> trainable_parameters(const torch::nn::Module& module) {
  std::vector<at::Tensor> out;
  for (const auto& p : unique_parameters(module))
    if (p.requires_grad()) out.push_back(p);
  return out;
}

Strategy::Strategy(const StrategyOptions& options)
    : options_(options),
      accelerator_(options.accelerator(), options.devices()),
      precision_(options.precision_plugin()
                     ? options.precision_plugin()
                     : std::make_shared<PrecisionPlugin>(options.precision(), accelerator_.device_type())),
      init_rng_(options.init_rng()) {}

InitScope Strategy::module_init_context(bool empty_init) const {
  return InitScope(InitOptions()
                       .device(root_device())
                       .dtype(precision_->precision().param_dtype())
                       .empty(empty_init)
                       .rng(init_rng_));
}

void Strategy::setup(Module& model) { precision_->convert_module(model, root_device()); }

namespace {
class AutocastContext : public ForwardContext {
 public:
  explicit AutocastContext(std::unique_ptr<AutocastGuard> guard) : guard_(std::move(guard)) {}

 private:
  std::unique_ptr<AutocastGuard> guard_;
};
}  // namespace

std::unique_ptr<ForwardContext> Strategy::forward_context() {
  return std::make_unique<AutocastContext>(precision_->forward_context());
}

Value Strategy::model_state_dict(Module& model) { return state_dict(model); }

Value Strategy::optimizer_state_dict(torch::optim::Optimizer& optimizer) {
  return volt::optimizer_state_dict(optimizer);
}

void Strategy::load_model_state_dict(Module& model, const Value& state) {
  load_state_dict(model, state, LoadOptions().zero_copy(false));
}

void Strategy::load_optimizer_state_dict(torch::optim::Optimizer& optimizer, const Value& state) {
  volt::load_optimizer_state_dict(optimizer, state);
}

Batch Strategy::batch_to_device(const Batch& batch) const {
  return batch.to(root_device(), precision_->input_dtype());
}

void Strategy::backward(const at::Tensor& loss, bool /*sync_gradients*/) { precision_->backward(loss); }

bool Strategy::optimizer_step(torch::optim::Optimizer& optimizer, const std::function<void()>& clip) {
  return precision_->optimizer_step(optimizer, clip);
}

void Strategy::clip_gradients(Module& model, double value, GradClipAlgorithm algorithm) {
  const auto params = trainable_parameters(model);
  switch (algorithm) {
    case GradClipAlgorithm::kNorm:
      torch::nn::utils::clip_grad_norm_(params, value);
      return;
    case GradClipAlgorithm::kValue:
      torch::nn::utils::clip_grad_value_(params, value);
      return;
  }
}

at::Tensor Strategy::reduce(const at::Tensor& tensor, ReduceOp /*op*/) { return tensor; }

double Strategy::reduce(double value, ReduceOp op) {
  if (world_size() == 1) return value;
  at::Tensor t = at::full({1}, value, at::TensorOptions().dtype(at::kDouble));
  return reduce(t, op).item<double>();
}

std::vector<at::Tensor> Strategy::all_gather(const at::Tensor& tensor) { return {tensor}; }

void Strategy::broadcast(at::Tensor& /*tensor*/, int64_t /*src*/) {}

std::string Strategy::broadcast(const std::string& text, int64_t src) {
  if (world_size() == 1) return text;
  at::Tensor length = at::full({1}, static_cast<int64_t>(text.size()), at::TensorOptions().dtype(at::kLong));
  broadcast(length, src);
  at::Tensor bytes = at::zeros({length.item<int64_t>()}, at::TensorOptions().dtype(at::kByte));
  if (global_rank() == src) std::memcpy(bytes.data_ptr(), text.data(), text.size());
  broadcast(bytes, src);
  return std::string(static_cast<const char*>(bytes.data_ptr()), static_cast<size_t>(bytes.numel()));
}

bool Strategy::reduce_boolean_decision(bool decision, bool all) {
  if (world_size() == 1) return decision;
  const double votes = reduce(decision ? 1.0 : 0.0, ReduceOp::kSum);
  return all ? votes == static_cast<double>(world_size()) : votes > 0.0;
}

void Strategy::save_checkpoint(const Checkpoint& checkpoint, const std::string& path) {
  const bool lossy = path.size() >= 12 && path.compare(path.size() - 12, 12, ".safetensors") == 0;
  if (is_global_zero()) checkpoint.save(path, lossy);
  barrier("save_checkpoint");
}

Checkpoint Strategy::load_checkpoint(const std::string& path) const { return Checkpoint::load(path); }

}  // namespace volt

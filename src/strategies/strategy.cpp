#include "volt/strategies/strategy.h"

#include <torch/torch.h>

#include "volt/checkpoint/load_state_dict.h"
#include "volt/checkpoint/state_dict.h"
#include "volt/core/parameters.h"
#include "volt/error.h"
#include "volt/optim/optimizer_state.h"
#include "volt/strategies/ddp_strategy.h"
#include "volt/strategies/fsdp_strategy.h"
#include "volt/strategies/single_device_strategy.h"
#include "volt/strategies/zero_strategy.h"

namespace volt {

std::vector<at::Tensor> trainable_parameters(const torch::nn::Module& module) {
  std::vector<at::Tensor> out;
  for (const auto& p : unique_parameters(module))
    if (p.requires_grad()) out.push_back(p);
  return out;
}

Strategy::Strategy(Accelerator accelerator, PrecisionPlugin precision, InitRng init_rng)
    : accelerator_(std::move(accelerator)), precision_(std::move(precision)), init_rng_(init_rng) {}

InitScope Strategy::module_init_context(bool empty_init) const {
  return InitScope(InitOptions()
                       .device(root_device())
                       .dtype(precision_.precision().param_dtype())
                       .empty(empty_init)
                       .rng(init_rng_));
}

void Strategy::setup(Module& model) { precision_.convert_module(model, root_device()); }

namespace {
class AutocastContext : public ForwardContext {
 public:
  explicit AutocastContext(std::unique_ptr<AutocastGuard> guard) : guard_(std::move(guard)) {}

 private:
  std::unique_ptr<AutocastGuard> guard_;
};
}  // namespace

std::unique_ptr<ForwardContext> Strategy::forward_context() {
  return std::make_unique<AutocastContext>(precision_.forward_context());
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
  return batch.to(root_device(), precision_.input_dtype());
}

void Strategy::backward(const at::Tensor& loss, bool /*sync_gradients*/) { precision_.backward(loss); }

bool Strategy::optimizer_step(torch::optim::Optimizer& optimizer, const std::function<void()>& clip) {
  return precision_.optimizer_step(optimizer, clip);
}

void Strategy::clip_gradients(Module& model, double value, const std::string& algorithm) {
  const auto params = trainable_parameters(model);
  if (algorithm == "norm")
    torch::nn::utils::clip_grad_norm_(params, value);
  else
    torch::nn::utils::clip_grad_value_(params, value);
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

std::shared_ptr<Strategy> make_strategy(const StrategyOptions& options) {
  const auto& name = options.name();
  VOLT_CHECK(name != "ddp_spawn" && name != "ddp_fork" && name != "ddp_notebook", "strategy '", name,
             "' is not offered: spawning or forking ranks from inside a running C++ program cannot carry its "
             "state (modules, loaders, closures) into them as Python pickles it; use \"ddp\", which re-runs ",
             "this program once per rank, as Lightning's default launcher does");
  const bool sharded = name == "fsdp" || name == "deepspeed_stage_3";
  const bool zero = name == "deepspeed_stage_1" || name == "deepspeed_stage_2";
  VOLT_CHECK(
      name == "auto" || name == "single_device" || name == "single" || name == "ddp" || sharded || zero,
      "unknown strategy '", name,
      "': use one of auto, single_device, ddp, fsdp, deepspeed_stage_1, deepspeed_stage_2, "
      "deepspeed_stage_3");
  VOLT_CHECK(options.num_nodes() >= 1, "num_nodes must be at least 1, not ", options.num_nodes());
  Accelerator accelerator(options.accelerator(), options.devices());
  PrecisionPlugin precision(options.precision(), accelerator.device_type());
  const int64_t processes = static_cast<int64_t>(accelerator.devices().size()) * options.num_nodes();
  if (sharded) return std::make_shared<FSDPStrategy>(std::move(accelerator), std::move(precision), options);
  if (zero) return std::make_shared<ZeroStrategy>(std::move(accelerator), std::move(precision), options);
  const bool distributed = name == "ddp" || (name == "auto" && processes > 1);
  if (!distributed) {
    VOLT_CHECK(processes == 1, "devices=", options.devices(), " and num_nodes=", options.num_nodes(),
               " make ", processes, " processes, which strategy '", name,
               "' cannot run: use strategy \"ddp\" (or \"auto\")");
    return std::make_shared<SingleDeviceStrategy>(std::move(accelerator), std::move(precision),
                                                  options.init_rng());
  }
  return std::make_shared<DDPStrategy>(std::move(accelerator), std::move(precision), options);
}

}  // namespace volt

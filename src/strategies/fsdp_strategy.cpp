#include "volt/strategies/fsdp_strategy.h"

#include <torch/torch.h>

#include "row_layout.h"
#include "sharded_units.h"
#include "storage_use_scope.h"
#include "volt/checkpoint/state_dict.h"
#include "volt/core/parameters.h"
#include "volt/error.h"
#include "volt/init/deferred_init.h"
#include "volt/optim/optimizer_state.h"

namespace volt {
namespace {

class ShardedContext : public ForwardContext {
 public:
  ShardedContext(std::unique_ptr<AutocastGuard> autocast, detail::ShardedUnits* units)
      : autocast_(std::move(autocast)), units_(units), scope_(units) {}
  // The step's last unit gives its memory back too (backward gathers again what it needs).
  ~ShardedContext() override { units_->free_all(); }

 private:
  std::unique_ptr<AutocastGuard> autocast_;
  detail::ShardedUnits* units_;
  detail::StorageUseScope scope_;
};

bool has_meta_parameter(const torch::nn::Module& model) {
  for (const auto& p : model.parameters()) if (p.is_meta()) return true;
  return false;
}

}  // namespace

FSDPStrategy::FSDPStrategy(Accelerator accelerator, PrecisionPlugin precision, const StrategyOptions& options)
    : ParallelStrategy(std::move(accelerator), std::move(precision), options) {}

FSDPStrategy::~FSDPStrategy() = default;

InitScope FSDPStrategy::module_init_context(bool /*empty_init*/) const {
  VOLT_FAIL("Trainer::init_module() under strategy '", name(), "' would build the whole model on every rank: ",
            "create the layers in the module's configure_model() instead, where each rank materializes only its "
            "shard (Lightning warns here; volt refuses)");
}

InitScope FSDPStrategy::configure_model_context() const {
  return InitScope(InitOptions()
                       .mode(InitMode::kDeferred)
                       .dtype(precision_.precision().param_dtype())
                       .rng(init_rng_));
}

void FSDPStrategy::setup(Module& model) {
  check_environment("setup");
  if (units_ && sharded_model_ == &model) return;
  torch::NoGradGuard no_grad;
  const bool deferred = has_meta_parameter(model);
  if (!deferred) {
    Strategy::setup(model);  // real layers (built outside configure_model): place, convert, agree on rank 0's
    broadcast_tensors(unique_parameters(model));
  }
  // Buffers are not sharded: whole on every rank, rank 0's values.
  for (auto& buffer : model.buffers()) {
    if (!buffer.is_meta()) continue;
    VOLT_CHECK(is_deferred(buffer), "a buffer of the model is on the meta device with no recorded init: ",
               "create it in configure_model() or load it");
    buffer.unsafeGetTensorImpl()->shallow_copy_from(materialize(buffer, root_device()).getIntrusivePtr());
  }
  for (auto& buffer : model.buffers())
    if (buffer.device() != root_device())
      buffer.unsafeGetTensorImpl()->shallow_copy_from(buffer.to(root_device()).getIntrusivePtr());
  const auto buffers = unique_buffers(model);
  if (!buffers.empty()) broadcast_tensors(buffers);
  detail::ShardingPlan plan;
  plan.wrap_modules = options_.sharding().auto_wrap_modules();
  plan.wrap_min_params = options_.sharding().auto_wrap_min_params();
  plan.param_dtype = options_.sharding().param_dtype();
  plan.reduce_dtype = options_.sharding().reduce_dtype();
  plan.device = root_device();
  units_ = std::make_unique<detail::ShardedUnits>(model, group_, plan);
  sharded_model_ = &model;
}

void FSDPStrategy::setup_optimizers(torch::optim::Optimizer& optimizer) {
  VOLT_CHECK(units_ != nullptr, "FSDPStrategy::setup_optimizers before setup(): the Trainer calls setup first");
  optimizer_param_.clear();
  std::unordered_map<const c10::TensorImpl*, size_t> index;
  for (size_t k = 0; k < units_->params().size(); ++k)
    index[units_->params()[k].shard.unsafeGetTensorImpl()] = k;
  for (auto& group : optimizer.param_groups())
    for (auto& param : group.params()) {
      param = units_->shard_of(param);  // the optimizer steps this rank's rows
      optimizer_param_.push_back(index.at(param.unsafeGetTensorImpl()));
    }
}

std::unique_ptr<ForwardContext> FSDPStrategy::forward_context() {
  VOLT_CHECK(units_ != nullptr, "a step under strategy '", name(), "' before setup()");
  return std::make_unique<ShardedContext>(precision_.forward_context(), units_.get());
}

void FSDPStrategy::backward(const at::Tensor& loss, bool /*sync_gradients*/) {
  // Every micro-batch is reduce-scattered into the sharded gradients (which then accumulate): skipping it,
  // as DDP's no_sync does, would keep the full gradients of the whole model alive between steps.
  units_->prepare_for_backward();
  {
    detail::StorageUseScope scope(units_.get());
    precision_.backward(loss);
  }
  units_->finalize_backward();
}

void FSDPStrategy::clip_gradients(Module& /*model*/, double value, const std::string& algorithm) {
  if (algorithm == "norm")
    units_->clip_grad_norm(value);
  else
    units_->clip_grad_value(value);
}

Value FSDPStrategy::model_state_dict(Module& model) {
  std::unordered_map<const c10::TensorImpl*, at::Tensor> full;
  units_->for_each_full([&](const detail::ShardedParam& p, const at::Tensor& values) {
    full[p.param.unsafeGetTensorImpl()] = values.to(at::kCPU, /*non_blocking=*/false, /*copy=*/true);
  });
  Value out = Value::dict(/*ordered=*/true);
  for (const auto& [name, tensor] : named_state_tensors(model)) {
    auto it = full.find(tensor.unsafeGetTensorImpl());
    out.to_dict().set(name, it != full.end() ? it->second : tensor.detach());
  }
  return out;
}

std::vector<const detail::RowLayout*> FSDPStrategy::optimizer_layouts() const {
  std::vector<const detail::RowLayout*> out;
  for (size_t k : optimizer_param_) out.push_back(&units_->params()[k].layout);
  return out;
}

Value FSDPStrategy::optimizer_state_dict(torch::optim::Optimizer& optimizer) {
  return detail::gather_optimizer_state(volt::optimizer_state_dict(optimizer), optimizer_layouts(), *group_);
}

void FSDPStrategy::load_model_state_dict(Module& model, const Value& state) {
  torch::NoGradGuard no_grad;
  const Dict& dict = state.to_dict();
  std::unordered_map<const c10::TensorImpl*, size_t> index;
  for (size_t k = 0; k < units_->params().size(); ++k) index[units_->params()[k].param.unsafeGetTensorImpl()] = k;
  for (const auto& [name, tensor] : named_state_tensors(model)) {
    const Value* value = dict.find(name);
    VOLT_CHECK(value != nullptr && value->is_tensor(), "the state dict has no tensor '", name, "' for the model");
    const at::Tensor& source = value->to_tensor();
    VOLT_CHECK(source.sizes() == tensor.sizes(), "'", name, "' is ", source.sizes(), " in the state dict but ",
               tensor.sizes(), " in the model");
    auto it = index.find(tensor.unsafeGetTensorImpl());
    if (it == index.end()) {
      at::Tensor target = tensor;
      target.copy_(source);
      continue;
    }
    const auto& p = units_->params()[it->second];
    at::Tensor shard = p.shard;
    shard.copy_(p.layout.slice(source.contiguous()));
  }
}

void FSDPStrategy::load_optimizer_state_dict(torch::optim::Optimizer& optimizer, const Value& state) {
  volt::load_optimizer_state_dict(optimizer, detail::slice_optimizer_state(state, optimizer_layouts()));
}

}  // namespace volt

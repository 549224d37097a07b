#include "volt/strategies/fsdp_strategy.h"

#include <torch/torch.h>

#include "../checkpoint/lightning_dcp.h"
#include "sharding/shard_layout.h"
#include "sharding/sharded_units.h"
#include "sharding/storage_use_scope.h"
#include "volt/checkpoint/dcp.h"
#include "volt/checkpoint/state_dict.h"
#include "volt/core/parameters.h"
#include "volt/error.h"
#include "volt/init/deferred_init.h"
#include "volt/optim/optimizer_state.h"
#include "volt/strategies/strategy_registry.h"

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

// Whether `source` is this rank's rows of the sharded parameter `param` (not the full tensor).
bool is_rows_of(const detail::ShardedUnits& units, const at::Tensor& param, const at::Tensor& source) {
  const auto k = units.index_of(param);
  return k && source.sizes() == c10::IntArrayRef(units.params()[*k].layout.shard_shape());
}

bool has_meta_parameter(const torch::nn::Module& model) {
  for (const auto& p : model.parameters())
    if (p.is_meta()) return true;
  return false;
}

}  // namespace

FSDPStrategy::FSDPStrategy(const StrategyOptions& options) : ParallelStrategy(options) {
  refuse_loss_scaling();
}

FSDPStrategy::~FSDPStrategy() = default;

void FSDPStrategy::register_strategies(StrategyRegistry& registry) {
  const auto make = [](const StrategyOptions& options) { return std::make_shared<FSDPStrategy>(options); };
  registry.add("fsdp", make,
               "fully sharded data parallel: parameters, gradients and optimizer state sharded");
  registry.add("deepspeed_stage_3", make, "ZeRO-3: what fsdp does, under DeepSpeed's name");
}

InitScope FSDPStrategy::module_init_context(bool /*empty_init*/) const {
  VOLT_FAIL(
      "Trainer::init_module() under strategy '", name(), "' would build the whole model on every rank: ",
      "create the layers in the module's configure_model() instead, where each rank materializes only its "
      "shard (Lightning warns here; volt refuses)");
}

InitScope FSDPStrategy::configure_model_context() const {
  return InitScope(
      InitOptions().mode(InitMode::kDeferred).dtype(precision_->precision().param_dtype()).rng(init_rng_));
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
  VOLT_CHECK(units_ != nullptr,
             "FSDPStrategy::setup_optimizers before setup(): the Trainer calls setup first");
  optimizer_param_.clear();
  for (auto& group : optimizer.param_groups())
    for (auto& param : group.params()) {
      const at::Tensor& rows = units_->shard_of(param);  // the optimizer steps this rank's rows
      optimizer_param_.push_back(*units_->index_of(param));
      param = rows;
    }
}

std::unique_ptr<ForwardContext> FSDPStrategy::forward_context() {
  VOLT_CHECK(units_ != nullptr, "a step under strategy '", name(), "' before setup()");
  return std::make_unique<ShardedContext>(precision_->forward_context(), units_.get());
}

void FSDPStrategy::backward(const at::Tensor& loss, bool /*sync_gradients*/) {
  // Every micro-batch is reduce-scattered into the sharded gradients (which then accumulate): skipping it,
  // as DDP's no_sync does, would keep the full gradients of the whole model alive between steps.
  units_->prepare_for_backward();
  {
    detail::StorageUseScope scope(units_.get());
    precision_->backward(loss);
  }
  units_->finalize_backward();
}

void FSDPStrategy::clip_gradients(Module& /*model*/, double value, GradClipAlgorithm algorithm) {
  detail::clip_sharded_gradients(units_->shards(), group_.get(), value, algorithm);
}

std::map<std::string, size_t> FSDPStrategy::parameter_names(const Module& model) const {
  std::map<std::string, size_t> out;
  for (const auto& item : model.named_parameters(/*recurse=*/true))
    if (const auto k = units_->index_of(item.value())) out[item.key()] = *k;
  return out;
}

Value FSDPStrategy::model_state_dict(Module& model) {
  if (sharded_state()) {
    const auto names = parameter_names(model);
    Value out = Value::dict(/*ordered=*/true);
    for (const auto& [name, tensor] : named_state_tensors(model)) {
      auto it = names.find(name);
      out.to_dict().set(name,
                        it != names.end() ? units_->params()[it->second].shard.detach() : tensor.detach());
    }
    return out;
  }
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

std::vector<const detail::ShardLayout*> FSDPStrategy::optimizer_layouts() const {
  std::vector<const detail::ShardLayout*> out;
  for (size_t k : optimizer_param_) out.push_back(&units_->params()[k].layout);
  return out;
}

Value FSDPStrategy::optimizer_state_dict(torch::optim::Optimizer& optimizer) {
  if (sharded_state()) return volt::optimizer_state_dict(optimizer);  // this rank's rows
  return detail::gather_optimizer_state(volt::optimizer_state_dict(optimizer), optimizer_layouts(), *group_);
}

void FSDPStrategy::load_model_state_dict(Module& model, const Value& state) {
  torch::NoGradGuard no_grad;
  const Dict& dict = state.to_dict();
  for (const auto& [name, tensor] : named_state_tensors(model)) {
    const Value* value = dict.find(name);
    VOLT_CHECK(value != nullptr && value->is_tensor(), "the state dict has no tensor '", name,
               "' for the model");
    const at::Tensor& source = value->to_tensor();
    // A full tensor, or this rank's rows of one (what load_checkpoint reads from a DCP directory): the
    // shape says which (when they coincide this rank holds every row, and both mean the same).
    VOLT_CHECK(source.sizes() == tensor.sizes() || is_rows_of(*units_, tensor, source), "'", name, "' is ",
               source.sizes(), " in the state dict but ", tensor.sizes(), " in the model");
    const auto k = units_->index_of(tensor);
    if (!k) {  // a buffer: whole on every rank
      at::Tensor target = tensor;
      target.copy_(source);
      continue;
    }
    const auto& p = units_->params()[*k];
    at::Tensor shard = p.shard;
    // load_checkpoint of a DCP directory read this rank's rows already; a full state is cut here.
    shard.copy_(source.sizes() == tensor.sizes() ? p.layout.slice(source.contiguous()) : source);
  }
}

void FSDPStrategy::load_optimizer_state_dict(torch::optim::Optimizer& optimizer, const Value& state) {
  volt::load_optimizer_state_dict(optimizer, detail::slice_optimizer_state(state, optimizer_layouts()));
}

detail::DcpPlacementOf FSDPStrategy::placement() const {
  const auto names = parameter_names(*sharded_model_);
  const detail::ShardedUnits* units = units_.get();
  return [names, units](const std::string& name) -> c10::optional<detail::DcpPlacement> {
    auto it = names.find(name);
    if (it == names.end()) return c10::nullopt;
    const auto& layout = units->params()[it->second].layout;
    return detail::DcpPlacement{layout.shape, layout.offsets(), layout.shard_shape()};
  };
}

std::vector<std::string> FSDPStrategy::optimizer_param_names() const {
  std::vector<std::string> names;
  for (size_t k : optimizer_param_) names.push_back(units_->params()[k].name);
  return names;
}

// Lightning's layout (checkpoint/lightning_dcp.h), each rank writing its rows, meta.pt inside the same
// atomic swap.
void FSDPStrategy::save_checkpoint(const Checkpoint& checkpoint, const std::string& path) {
  if (!sharded_state()) return Strategy::save_checkpoint(checkpoint, path);
  VOLT_CHECK(sharded_model_ != nullptr, "FSDP save_checkpoint before setup()");
  save_dcp(path,
           detail::lightning_dcp_state(checkpoint, placement(), optimizer_param_names(), is_global_zero()),
           group_.get());
}

Checkpoint FSDPStrategy::load_checkpoint(const std::string& path) const {
  if (!is_dcp_directory(path)) return Strategy::load_checkpoint(path);
  VOLT_CHECK(sharded_model_ != nullptr, "FSDP load_checkpoint before setup()");
  std::vector<std::string> model_names;
  for (const auto& [name, tensor] : named_state_tensors(*sharded_model_)) model_names.push_back(name);
  // Without an optimizer (Trainer::setup_model before a load), the weights only.
  return detail::load_lightning_dcp(path, model_names, placement(), optimizer_param_names(),
                                    units_->params().front().shard.options());
}

}  // namespace volt

#include "volt/strategies/fsdp_strategy.h"

#include <torch/torch.h>

#include "sharding/shard_layout.h"
#include "sharding/sharded_units.h"
#include "sharding/storage_use_scope.h"
#include "volt/checkpoint/dcp.h"
#include "volt/checkpoint/state_dict.h"
#include "volt/checkpoint/torch_file.h"
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
  for (const auto& p : model.parameters())
    if (p.is_meta()) return true;
  return false;
}

}  // namespace

FSDPStrategy::FSDPStrategy(Accelerator accelerator, PrecisionPlugin precision, const StrategyOptions& options)
    : ParallelStrategy(std::move(accelerator), std::move(precision), options) {
  VOLT_CHECK(
      precision_.scaler() == nullptr, "strategy '", options.name(), "' with precision 16-mixed is not ",
      "offered yet: the loss scaler's skip decision would be taken per shard; use bf16-mixed or bf16-true");
  const auto& type = options.sharding().state_dict_type();
  VOLT_CHECK(type == "full" || type == "sharded", "ShardingOptions::state_dict_type '", type,
             "': use \"full\" (one checkpoint file) or \"sharded\" (a distributed checkpoint directory)");
}

FSDPStrategy::~FSDPStrategy() = default;

InitScope FSDPStrategy::module_init_context(bool /*empty_init*/) const {
  VOLT_FAIL(
      "Trainer::init_module() under strategy '", name(), "' would build the whole model on every rank: ",
      "create the layers in the module's configure_model() instead, where each rank materializes only its "
      "shard (Lightning warns here; volt refuses)");
}

InitScope FSDPStrategy::configure_model_context() const {
  return InitScope(
      InitOptions().mode(InitMode::kDeferred).dtype(precision_.precision().param_dtype()).rng(init_rng_));
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

std::vector<const detail::RowLayout*> FSDPStrategy::optimizer_layouts() const {
  std::vector<const detail::RowLayout*> out;
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
    VOLT_CHECK(loaded_rows_ || source.sizes() == tensor.sizes(), "'", name, "' is ", source.sizes(),
               " in the state dict but ", tensor.sizes(), " in the model");
    const auto k = units_->index_of(tensor);
    if (!k) {  // a buffer: whole on every rank
      at::Tensor target = tensor;
      target.copy_(source);
      continue;
    }
    const auto& p = units_->params()[*k];
    at::Tensor shard = p.shard;
    // load_checkpoint of a DCP directory read this rank's rows already; a full state is cut here.
    shard.copy_(loaded_rows_ ? source : p.layout.slice(source.contiguous()));
  }
}

void FSDPStrategy::load_optimizer_state_dict(torch::optim::Optimizer& optimizer, const Value& state) {
  if (loaded_rows_) {
    loaded_rows_ = false;
    volt::load_optimizer_state_dict(optimizer, state);
    return;
  }
  volt::load_optimizer_state_dict(optimizer, detail::slice_optimizer_state(state, optimizer_layouts()));
}

namespace {

std::vector<int64_t> row_offsets(const detail::RowLayout& layout) {
  std::vector<int64_t> offsets(layout.shape.size(), 0);
  if (!offsets.empty()) offsets[0] = layout.rank * layout.chunk_rows;
  return offsets;
}

// A tensor every rank holds whole: rank 0 writes it.
DcpTensor replicated(const at::Tensor& t, bool writer) {
  DcpTensor out{t.sizes().vec(), {}};
  if (writer) out.chunks.push_back({std::vector<int64_t>(t.dim(), 0), t.detach().cpu()});
  return out;
}

}  // namespace

// Lightning's FSDPStrategy layout (state_dict_type="sharded"): "model.<fqn>", "optimizer_0.state.<fqn>.<key>"
// (keyed by parameter name, as FSDP.optim_state_dict), "optimizer_0.param_groups.<g>.<field>" byte items,
// planner paths as torch.distributed.checkpoint flattens them, and the rest of the checkpoint in meta.pt
// inside the same atomic swap.
void FSDPStrategy::save_checkpoint(const Checkpoint& checkpoint, const std::string& path) {
  if (!sharded_state()) return Strategy::save_checkpoint(checkpoint, path);
  VOLT_CHECK(sharded_model_ != nullptr, "FSDP save_checkpoint before setup()");
  const auto names = parameter_names(*sharded_model_);
  const bool writer = is_global_zero();
  DcpState state;
  for (const auto& [key, value] : checkpoint.state_dict.to_dict()) {
    const std::string name = key.to_string();
    auto it = names.find(name);
    state.paths["model." + name] = Value::tuple({"model", name});
    if (it == names.end()) {
      state.tensors["model." + name] = replicated(value.to_tensor(), writer);
      continue;
    }
    const auto& p = units_->params()[it->second];
    DcpTensor t{p.layout.shape, {}};
    if (p.layout.valid_rows > 0)
      t.chunks.push_back({row_offsets(p.layout), value.to_tensor().detach().cpu()});
    state.tensors["model." + name] = std::move(t);
  }
  const auto& optimizers = checkpoint.optimizer_states.items();
  for (size_t o = 0; o < optimizers.size(); ++o) {
    const std::string prefix = "optimizer_" + std::to_string(o);
    for (const auto& [index, entry] : optimizers[o]["state"].to_dict()) {
      const auto& p = units_->params()[optimizer_param_.at(static_cast<size_t>(index.to_int()))];
      for (const auto& [key, value] : entry.to_dict()) {
        const std::string fqn = prefix + ".state." + p.name + "." + key.to_string();
        state.paths[fqn] = Value::tuple({prefix, "state", p.name, key.to_string()});
        VOLT_CHECK(value.is_tensor(), "optimizer state '", key.to_string(), "' is not a tensor: the sharded ",
                   "checkpoint stores tensors only");
        if (key.to_string() == "step") {
          state.tensors[fqn] = replicated(value.to_tensor(), writer);
        } else {
          DcpTensor t{p.layout.shape, {}};
          if (p.layout.valid_rows > 0)
            t.chunks.push_back({row_offsets(p.layout), value.to_tensor().detach().cpu()});
          state.tensors[fqn] = std::move(t);
        }
      }
    }
    // Field by field, "params" as parameter names: what DCP makes of FSDP.optim_state_dict's groups.
    const auto& groups = optimizers[o]["param_groups"].items();
    for (size_t g = 0; g < groups.size() && writer; ++g) {
      for (const auto& [field, value] : groups[g].to_dict()) {
        const std::string fqn = prefix + ".param_groups." + std::to_string(g) + "." + field.to_string();
        Value stored = value;
        if (field.to_string() == "params") {
          stored = Value::list();
          for (const Value& index : value.items())
            stored.items().push_back(units_->params()[optimizer_param_.at(index.to_int())].name);
        }
        state.bytes[fqn] = torch_save_bytes(stored);
        state.paths[fqn] = Value::tuple({prefix, "param_groups", static_cast<int64_t>(g), field.to_string()});
      }
    }
  }
  if (writer) {
    Value rest = checkpoint.to_value();
    rest.to_dict().erase("state_dict");
    rest.to_dict().erase("optimizer_states");
    state.files["meta.pt"] = torch_save_bytes(rest);
  }
  save_dcp(path, state, group_.get());
}

// optimizer_0's param groups, with "params" as optimizer indices: field by field as Lightning (and volt)
// write them, or one byte item as volt wrote them before; None when the checkpoint has no optimizer.
Value FSDPStrategy::param_groups(const std::string& path, const DcpMetadata& metadata) const {
  if (metadata.bytes.count("optimizer_0.param_groups"))
    return load_dcp_object(path, "optimizer_0.param_groups");
  const std::string prefix = "optimizer_0.param_groups.";
  std::map<int64_t, Value> groups;
  for (const auto& [fqn, storage] : metadata.bytes) {
    if (fqn.compare(0, prefix.size(), prefix) != 0) continue;
    const size_t dot = fqn.find('.', prefix.size());
    const std::string index = fqn.substr(prefix.size(), dot - prefix.size());
    VOLT_CHECK(dot != std::string::npos && !index.empty() && index.size() <= 6 &&
                   index.find_first_not_of("0123456789") == std::string::npos,
               "'", path, "': item '", fqn, "' is not optimizer_0.param_groups.<group index>.<field>");
    const int64_t g = std::stoll(index);
    auto& group = groups.try_emplace(g, Value::dict()).first->second;
    group.to_dict().set(fqn.substr(dot + 1), load_dcp_object(path, fqn));
  }
  if (groups.empty()) return Value();
  std::map<std::string, int64_t> index_of;
  for (size_t i = 0; i < optimizer_param_.size(); ++i)
    index_of[units_->params()[optimizer_param_[i]].name] = static_cast<int64_t>(i);
  Value out = Value::list();
  for (auto& [g, group] : groups) {
    VOLT_CHECK(g == static_cast<int64_t>(out.items().size()), "'", path, "': param group ",
               out.items().size(), " is missing");
    const Value* names = group.to_dict().find("params");
    VOLT_CHECK(names != nullptr, "'", path, "': param group ", g, " has no 'params'");
    Value params = Value::list();
    for (const Value& p : names->items()) {
      if (p.is_int()) {
        params.items().push_back(p);
        continue;
      }
      auto it = index_of.find(p.to_string());
      VOLT_CHECK(it != index_of.end(), "'", path, "': param group ", g, " names parameter '", p.to_string(),
                 "', which the optimizer does not hold");
      params.items().push_back(it->second);
    }
    group.to_dict().set("params", params);
    out.items().push_back(group);
  }
  return out;
}

Checkpoint FSDPStrategy::load_checkpoint(const std::string& path) const {
  if (!is_dcp_directory(path)) return Strategy::load_checkpoint(path);
  VOLT_CHECK(sharded_model_ != nullptr, "FSDP load_checkpoint before setup()");
  const DcpMetadata metadata = read_dcp_metadata(path);
  // Lightning's meta.pt is the checkpoint with "state_dict" and "optimizer_states" popped.
  Value meta = TorchFileReader(path + "/meta.pt").contents();
  VOLT_CHECK(meta.is_dict(), "'", path, "/meta.pt' is not a dict; it is not a Lightning sharded checkpoint");
  if (!meta.to_dict().contains("state_dict")) meta.to_dict().set("state_dict", Value::dict(/*ordered=*/true));
  Checkpoint ckpt = Checkpoint::from_value(meta);
  const auto names = parameter_names(*sharded_model_);
  std::map<std::string, std::vector<DcpChunk>> requests;
  auto rows_of = [&](const std::string& fqn, const detail::ShardedParam& p) {
    VOLT_CHECK(metadata.tensors.count(fqn), "'", path, "' holds no '", fqn, "'");
    at::Tensor rows = at::zeros(p.layout.shard_shape(), p.shard.options());
    if (p.layout.valid_rows > 0) requests[fqn].push_back({row_offsets(p.layout), rows});
    return rows;
  };
  for (const auto& [name, tensor] : named_state_tensors(*sharded_model_)) {
    auto it = names.find(name);
    const std::string fqn = "model." + name;
    if (it == names.end()) {
      VOLT_CHECK(metadata.tensors.count(fqn), "'", path, "' holds no '", fqn, "'");
      ckpt.state_dict.to_dict().set(name, load_dcp_tensor(path, metadata, fqn));
    } else {
      ckpt.state_dict.to_dict().set(name, rows_of(fqn, units_->params()[it->second]));
    }
  }
  Value groups = param_groups(path, metadata);
  if (!groups.is_none()) {
    Value optimizer = Value::dict();
    Value per_index = Value::dict();
    for (size_t i = 0; i < optimizer_param_.size(); ++i) {
      const auto& p = units_->params()[optimizer_param_[i]];
      const std::string prefix = "optimizer_0.state." + p.name + ".";
      Value entry = Value::dict();
      for (const auto& [fqn, info] : metadata.tensors) {
        if (fqn.compare(0, prefix.size(), prefix) != 0 || fqn.find('.', prefix.size()) != std::string::npos)
          continue;
        const std::string key = fqn.substr(prefix.size());
        entry.to_dict().set(
            key, key == "step" ? Value(load_dcp_tensor(path, metadata, fqn)) : Value(rows_of(fqn, p)));
      }
      if (!entry.to_dict().empty()) per_index.to_dict().set(static_cast<int64_t>(i), entry);
    }
    optimizer.to_dict().set("state", per_index);
    optimizer.to_dict().set("param_groups", groups);
    ckpt.optimizer_states.items().push_back(optimizer);
  }
  load_dcp(path, metadata, requests);
  loaded_rows_ = true;
  return ckpt;
}

}  // namespace volt

#include "sharded_units.h"

#include <c10/util/strides.h>
#include <torch/torch.h>

#include <algorithm>
#include <functional>
#include <iostream>
#include <set>

#include "volt/error.h"
#include "volt/init/deferred_init.h"

namespace volt::detail {
namespace {

// A module's class name without namespace, template arguments and LibTorch's "Impl" suffix
// ("volt::models::BlockImpl" -> "Block", "resnet::ResNetImpl<resnet::ResidualBlock>" -> "ResNet").
std::string short_type(const torch::nn::Module& module) {
  std::string name = module.name();
  name = name.substr(0, name.find('<'));
  if (auto colon = name.rfind("::"); colon != std::string::npos) name = name.substr(colon + 2);
  if (name.size() > 4 && name.compare(name.size() - 4, 4, "Impl") == 0) name.resize(name.size() - 4);
  return name;
}

bool wrapped_by_type(const torch::nn::Module& module, const std::vector<std::string>& types) {
  const std::string full = module.name(), short_name = short_type(module);
  return std::any_of(types.begin(), types.end(), [&](const std::string& t) {
    return t == full || t == short_name || t + "Impl" == short_name;
  });
}

// A wrap name that matches no module (a typo) would leave the whole model in one unit, gathered whole on
// every rank: say so, with the classes the model has (once, from global rank 0).
void report_unmatched(const std::vector<std::string>& types, const std::set<std::string>& matched,
                      const std::set<std::string>& classes) {
  for (const auto& type : types) {
    if (matched.count(type)) continue;
    std::string known;
    for (const auto& c : classes) known += (known.empty() ? "" : ", ") + c;
    std::cerr << "volt: warning: ShardingOptions::auto_wrap_modules names '" << type
              << "', which matches no module of the model, so its layers are not wrapped (each unmatched "
                 "layer stays in the root unit, gathered with it); the model's module classes are: "
              << known << std::endl;
  }
}

struct Busy {
  bool& flag;
  bool previous;
  explicit Busy(bool& f) : flag(f), previous(f) { flag = true; }
  ~Busy() { flag = previous; }
};

}  // namespace

ShardedUnits::ShardedUnits(torch::nn::Module& model, std::shared_ptr<ProcessGroup> group,
                           const ShardingPlan& plan)
    : group_(std::move(group)) {
  rank_ = group_ ? group_->rank() : 0;
  world_ = group_ ? group_->size() : 1;
  build_units(model, plan);
  VOLT_CHECK(!params_.empty(), "sharding a model with no parameters: create its layers in configure_model()");
  const c10::ScalarType shard_dtype = params_.front().param.scalar_type();
  for (const auto& p : params_)
    VOLT_CHECK(p.param.scalar_type() == shard_dtype,
               "sharded strategies keep one dtype for all parameters, but '", p.name, "' is ",
               p.param.scalar_type(), " and '", params_.front().name, "' is ", shard_dtype,
               ": convert the model (or let the precision setting do it) before fit");
  param_dtype_ = plan.param_dtype.value_or(shard_dtype);
  reduce_dtype_ = plan.reduce_dtype.value_or(param_dtype_);
  for (size_t u = 0; u < units_.size(); ++u) {
    lay_out(units_[u], shard_dtype, plan.device);
    for (size_t k : units_[u].params) unit_of_[k] = u;
    unit_of_storage_[units_[u].storage.get()] = u;
  }
  std::vector<at::Tensor> trainable;
  std::vector<size_t> index;  // trainable[i] is params_[index[i]]
  for (size_t k = 0; k < params_.size(); ++k)
    if (params_[k].trainable) trainable.push_back(params_[k].param), index.push_back(k);
  hooks_ = std::make_unique<GradReadyHooks>(
      trainable, [this, index](size_t i) { mark_ready(index[i]); }, "FSDP");
}

ShardedUnits::~ShardedUnits() = default;

void ShardedUnits::build_units(torch::nn::Module& model, const ShardingPlan& plan) {
  // Every parameter once (tied ones under their first name), in registration order.
  for (const auto& item : model.named_parameters(/*recurse=*/true)) {
    const auto* impl = item.value().unsafeGetTensorImpl();
    if (param_of_impl_.count(impl)) continue;
    param_of_impl_[impl] = params_.size();
    ShardedParam p;
    p.name = item.key();
    p.param = item.value();
    p.trainable = item.value().requires_grad();
    params_.push_back(std::move(p));
  }
  unit_of_.assign(params_.size(), SIZE_MAX);
  std::vector<bool> assigned(params_.size(), false);
  auto take = [&](const torch::nn::Module& module, const std::string& name) {
    ShardedUnit unit;
    unit.name = name;
    for (const auto& t : module.parameters(/*recurse=*/true)) {
      const size_t k = param_of_impl_.at(t.unsafeGetTensorImpl());
      if (!assigned[k]) unit.params.push_back(k), assigned[k] = true;
    }
    if (!unit.params.empty()) units_.push_back(std::move(unit));
  };
  // By type: pre-order, a wrapped module's subtree is its unit.
  if (!plan.wrap_modules.empty()) {
    std::set<std::string> matched, classes;
    for (const auto& item : model.named_modules("", /*include_self=*/false)) {
      classes.insert(short_type(*item.value()));
      for (const auto& type : plan.wrap_modules)
        if (wrapped_by_type(*item.value(), {type})) matched.insert(type);
      if (wrapped_by_type(*item.value(), plan.wrap_modules)) take(*item.value(), item.key());
    }
    if (rank_ == 0) report_unmatched(plan.wrap_modules, matched, classes);
  }
  // By size: children first, then a module whose unwrapped parameters reach the threshold.
  if (plan.wrap_min_params > 0) {
    std::function<int64_t(const torch::nn::Module&, const std::string&, bool)> visit =
        [&](const torch::nn::Module& module, const std::string& name, bool root) -> int64_t {
      int64_t unwrapped = 0;
      for (const auto& child : module.named_children())
        unwrapped += visit(*child.value(), name.empty() ? child.key() : name + "." + child.key(), false);
      for (const auto& t : module.parameters(/*recurse=*/false))
        if (!assigned[param_of_impl_.at(t.unsafeGetTensorImpl())]) unwrapped += t.numel();
      if (!root && unwrapped >= plan.wrap_min_params) {
        take(module, name);
        return 0;
      }
      return unwrapped;
    };
    visit(model, "", true);
  }
  ShardedUnit root;  // what no policy wrapped
  for (size_t k = 0; k < params_.size(); ++k)
    if (!assigned[k]) root.params.push_back(k);
  if (!root.params.empty()) units_.insert(units_.begin(), std::move(root));
}

void ShardedUnits::lay_out(ShardedUnit& unit, c10::ScalarType shard_dtype, c10::Device device) {
  for (size_t k : unit.params) {
    auto& p = params_[k];
    p.layout = ShardLayout::of(p.param.sizes(), rank_, world_);
    p.full_offset = unit.full_numel;
    p.shard_offset = unit.shard_numel;
    unit.full_numel += world_ * p.layout.chunk_rows * p.layout.row_numel;
    unit.shard_numel += p.layout.chunk_rows * p.layout.row_numel;
  }
  torch::NoGradGuard no_grad;
  unit.shard = at::zeros({unit.shard_numel}, at::TensorOptions().dtype(shard_dtype).device(device));
  // This rank's rows: from the recorded init (deferred), or from the real tensor.
  for (size_t k : unit.params) {
    auto& p = params_[k];
    const int64_t begin = p.layout.begin(), count = p.layout.count();
    at::Tensor rows = unit.shard.narrow(0, p.shard_offset, count);
    if (is_deferred(p.param)) {
      if (count > 0) materialize_slice(p.param, begin, begin + count, rows);
    } else {
      VOLT_CHECK(!p.param.is_meta(), "parameter '", p.name, "' is on the meta device with no recorded init: ",
                 "create it in configure_model() (where the sharded strategies record its init) or load it");
      if (count > 0) rows.copy_(p.param.detach().to(device).reshape({-1}).narrow(0, begin, count));
    }
    p.shard = rows.view(p.layout.shard_shape());
  }
  // The unit's full storage, and each parameter re-seated on it (same TensorImpl: DESIGN §7).
  unit.full = at::empty({unit.full_numel}, at::TensorOptions().dtype(param_dtype_).device(device));
  unit.storage =
      c10::intrusive_ptr<c10::StorageImpl>::reclaim_copy(unit.full.storage().unsafeGetStorageImpl());
  for (size_t k : unit.params) {
    auto& p = params_[k];
    at::Tensor view =
        unit.full.as_strided(p.layout.shape, c10::contiguous_strides(p.layout.shape), p.full_offset);
    const bool requires_grad = p.param.requires_grad();
    p.param.unsafeGetTensorImpl()->shallow_copy_from(view.getIntrusivePtr());
    VOLT_CHECK(p.param.requires_grad() == requires_grad, "internal: re-seating '", p.name,
               "' lost requires_grad");
  }
  release(unit);
}

void ShardedUnits::release(ShardedUnit& unit) {
  // PyTorch's FSDP frees with storage.resize_(0): the tensors stay, their memory goes.
  unit.storage->set_data_ptr_noswap(at::DataPtr(nullptr, unit.storage->device()));
  unit.storage->set_nbytes(0);
  unit.gathered = false;
}

void ShardedUnits::gather(ShardedUnit& unit) {
  Busy busy(busy_);
  torch::NoGradGuard no_grad;
  const size_t bytes = static_cast<size_t>(unit.full_numel) * c10::elementSize(param_dtype_);
  unit.storage->set_data_ptr_noswap(unit.storage->allocator()->allocate(bytes));
  unit.storage->set_nbytes(bytes);
  at::Tensor mine = unit.shard.to(param_dtype_);
  std::vector<at::Tensor> all = world_ > 1 ? group_->all_gather(mine) : std::vector<at::Tensor>{mine};
  for (size_t k : unit.params) {
    const auto& p = params_[k];
    const int64_t chunk = p.layout.chunk_rows * p.layout.row_numel;
    for (int64_t r = 0; r < world_; ++r)
      unit.full.narrow(0, p.full_offset + r * chunk, chunk).copy_(all[r].narrow(0, p.shard_offset, chunk));
  }
  unit.gathered = true;
  ++gathers_;
  max_gathered_ = std::max<int64_t>(
      max_gathered_,
      std::count_if(units_.begin(), units_.end(), [](const ShardedUnit& u) { return u.gathered; }));
}

void ShardedUnits::before_op(const std::vector<const c10::StorageImpl*>& storages) {
  if (busy_) return;
  std::vector<size_t> touched;
  for (const auto* storage : storages) {
    auto it = unit_of_storage_.find(storage);
    if (it != unit_of_storage_.end() &&
        std::find(touched.begin(), touched.end(), it->second) == touched.end())
      touched.push_back(it->second);
  }
  if (touched.empty()) return;
  for (size_t u : touched) ++units_[u].pins;
  for (size_t u : touched) {
    if (units_[u].gathered) continue;
    // A new unit starts: the others that no running op holds give their memory back.
    for (auto& other : units_)
      if (other.gathered && other.pins == 0) release(other);
    gather(units_[u]);
  }
}

void ShardedUnits::after_op(const std::vector<const c10::StorageImpl*>& storages) {
  if (busy_) return;
  std::set<size_t> touched;
  for (const auto* storage : storages) {
    auto it = unit_of_storage_.find(storage);
    if (it != unit_of_storage_.end()) touched.insert(it->second);
  }
  for (size_t u : touched) --units_[u].pins;
}

void ShardedUnits::prepare_for_backward() {
  for (auto& unit : units_) {
    unit.reduced = false;
    unit.pending = 0;
    for (size_t k : unit.params) unit.pending += params_[k].trainable ? 1 : 0;
  }
}

void ShardedUnits::mark_ready(size_t param) {
  ShardedUnit& unit = units_[unit_of_[param]];
  if (unit.pending > 0 && --unit.pending == 0 && !unit.reduced) reduce(unit);
}

void ShardedUnits::reduce(ShardedUnit& unit) {
  Busy busy(busy_);
  torch::NoGradGuard no_grad;
  unit.reduced = true;
  const auto options = unit.shard.options().dtype(reduce_dtype_);
  // Rank-major: rank r's rows of every parameter of the unit, then rank r + 1's.
  at::Tensor input = at::zeros({world_ * unit.shard_numel}, options);
  bool any = false;
  for (size_t k : unit.params) {
    const auto& p = params_[k];
    if (!p.param.grad().defined()) continue;
    any = true;
    at::Tensor grad = p.param.grad().reshape({-1});
    for (int64_t r = 0; r < world_; ++r) {
      const int64_t rows = p.layout.rows_of(r);
      if (rows == 0) continue;
      input.narrow(0, r * unit.shard_numel + p.shard_offset, rows * p.layout.row_numel)
          .copy_(grad.narrow(0, r * p.layout.chunk_rows * p.layout.row_numel, rows * p.layout.row_numel));
    }
  }
  at::Tensor mine = world_ > 1 ? group_->reduce_scatter(input, ReduceOp::kSum) : input;
  mine.div_(static_cast<double>(world_));
  for (size_t k : unit.params) {
    auto& p = params_[k];
    const bool local = p.param.grad().defined();
    p.param.mutable_grad() = at::Tensor();
    if (!p.trainable) continue;
    at::Tensor piece =
        mine.narrow(0, p.shard_offset, p.layout.valid_rows * p.layout.row_numel).view(p.shard.sizes());
    if (!local && !any && !piece.ne(0).any().item<bool>()) continue;  // unused everywhere: no gradient
    piece = piece.to(p.shard.scalar_type());
    if (p.shard.grad().defined())
      p.shard.mutable_grad().add_(piece);
    else
      p.shard.mutable_grad() = piece.clone();
  }
  release(unit);
}

void ShardedUnits::finalize_backward() {
  for (auto& unit : units_)
    if (!unit.reduced) reduce(unit);  // in unit order on every rank
  free_all();
}

void ShardedUnits::free_all() {
  for (auto& unit : units_)
    if (unit.gathered && unit.pins == 0) release(unit);
}

const at::Tensor& ShardedUnits::shard_of(const at::Tensor& param) const {
  const auto k = index_of(param);
  VOLT_CHECK(k.has_value(), "the optimizer holds a tensor that is not a parameter of the sharded model: ",
             "build it in configure_optimizers() from the model's parameters()");
  return params_[*k].shard;
}

c10::optional<size_t> ShardedUnits::index_of(const at::Tensor& param) const {
  auto it = param_of_impl_.find(param.unsafeGetTensorImpl());
  return it == param_of_impl_.end() ? c10::nullopt : c10::optional<size_t>(it->second);
}

std::vector<at::Tensor> ShardedUnits::shards() const {
  std::vector<at::Tensor> out;
  for (const auto& p : params_) out.push_back(p.shard);
  return out;
}

void ShardedUnits::for_each_full(const std::function<void(const ShardedParam&, const at::Tensor&)>& fn) {
  for (auto& unit : units_) {
    const bool was = unit.gathered;
    if (!was) gather(unit);
    for (size_t k : unit.params) fn(params_[k], params_[k].param.detach());
    if (!was) release(unit);
  }
}

}  // namespace volt::detail

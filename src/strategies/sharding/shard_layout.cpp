#include "shard_layout.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "volt/error.h"

namespace volt::detail {

ShardLayout ShardLayout::of(c10::IntArrayRef shape, int64_t rank, int64_t world, int64_t dim) {
  ShardLayout l;
  l.shape = shape.vec();
  l.rank = rank;
  l.world = world;
  VOLT_CHECK(dim == 0 || (dim > 0 && dim < static_cast<int64_t>(l.shape.size())), "cannot shard dimension ",
             dim, " of a tensor of shape ", shape);
  l.dim = dim;
  int64_t numel = 1;
  for (int64_t d : l.shape) numel *= d;
  l.rows = l.shape.empty() ? 1 : l.shape[dim];
  l.row_numel = l.rows == 0 ? 0 : numel / l.rows;
  l.chunk_rows = (l.rows + world - 1) / world;
  l.valid_rows = l.rows_of(rank);
  return l;
}

int64_t ShardLayout::rows_of(int64_t r) const {
  return std::max<int64_t>(0, std::min(chunk_rows, rows - r * chunk_rows));
}

int64_t ShardLayout::begin() const {
  VOLT_CHECK(dim == 0, "internal: a flat range of a layout sharded along dimension ", dim);
  return rank * chunk_rows * row_numel;
}

int64_t ShardLayout::count() const {
  VOLT_CHECK(dim == 0, "internal: a flat range of a layout sharded along dimension ", dim);
  return valid_rows * row_numel;
}

std::vector<int64_t> ShardLayout::shard_shape() const {
  if (shape.empty()) return valid_rows == 1 ? std::vector<int64_t>{} : std::vector<int64_t>{0};
  std::vector<int64_t> s = shape;
  s[dim] = valid_rows;
  return s;
}

std::vector<int64_t> ShardLayout::offsets() const {
  std::vector<int64_t> out(shape.size(), 0);
  if (!out.empty()) out[dim] = std::min(rank * chunk_rows, rows);
  return out;
}

at::Tensor ShardLayout::slice(const at::Tensor& full) const {
  if (dim == 0) return full.reshape({-1}).narrow(0, begin(), count()).view(shard_shape());
  return full.narrow(dim, std::min(rank * chunk_rows, rows), valid_rows);
}

at::Tensor ShardLayout::gather(ProcessGroup& group, const at::Tensor& shard) const {
  // Each rank's chunk padded to chunk_rows slices along `dim`, moved as one contiguous block.
  std::vector<int64_t> padded_shape = shape.empty() ? std::vector<int64_t>{1} : shape;
  padded_shape[dim] = chunk_rows;
  at::Tensor padded = at::zeros(padded_shape, shard.options());
  if (valid_rows > 0)
    padded.narrow(dim, 0, valid_rows)
        .copy_(shard.reshape(shard_shape().empty() ? std::vector<int64_t>{1} : shard_shape()));
  const auto pieces = group.all_gather(padded);
  std::vector<at::Tensor> parts;
  for (int64_t r = 0; r < world; ++r) parts.push_back(pieces[r].narrow(dim, 0, rows_of(r)));
  return at::cat(parts, dim).reshape(shape);
}

void clip_sharded_gradients(const std::vector<at::Tensor>& shards, ProcessGroup* group, double value,
                            GradClipAlgorithm algorithm) {
  torch::NoGradGuard no_grad;
  if (algorithm == GradClipAlgorithm::kValue) {
    for (auto shard : shards)
      if (shard.grad().defined()) shard.mutable_grad().clamp_(-value, value);
    return;
  }
  // The sum of squares on the group's device: NCCL reduces CUDA tensors only.
  const c10::Device device = group != nullptr ? group->device() : c10::Device(c10::kCPU);
  at::Tensor total = at::zeros({1}, at::TensorOptions().dtype(at::kDouble).device(device));
  for (const auto& shard : shards)
    if (shard.grad().defined() && shard.numel() > 0)
      total += shard.grad().to(at::kDouble).pow(2).sum().to(device);
  if (group != nullptr) group->all_reduce(total, ReduceOp::kSum);
  const double coef = value / (std::sqrt(total.item<double>()) + 1e-6);
  if (coef < 1.0)
    for (auto shard : shards)
      if (shard.grad().defined()) shard.mutable_grad().mul_(coef);
}

namespace {

template <typename Fn>
Value map_state(const Value& state, const std::vector<const ShardLayout*>& layouts, Fn fn) {
  Value per_index = Value::dict();
  for (const auto& [key, entry] : state["state"].to_dict()) {
    const int64_t i = key.to_int();
    VOLT_CHECK(i >= 0 && static_cast<size_t>(i) < layouts.size(), "optimizer state for parameter ", i,
               " but the optimizer has ", layouts.size(), " parameters");
    Value mapped = Value::dict();
    for (const auto& [name, value] : entry.to_dict()) {
      const bool per_element = value.is_tensor() && !(name.is_string() && name.to_string() == "step");
      mapped.to_dict().set(name, per_element ? Value(fn(*layouts[i], value.to_tensor())) : value);
    }
    per_index.to_dict().set(key, mapped);
  }
  Value out = Value::dict();
  out.to_dict().set("state", per_index);
  out.to_dict().set("param_groups", state["param_groups"]);
  return out;
}

}  // namespace

Value gather_optimizer_state(const Value& state, const std::vector<const ShardLayout*>& layouts,
                             ProcessGroup& group) {
  torch::NoGradGuard no_grad;
  // Every rank holds state for the same parameters (they step together), so the gathers line up.
  return map_state(state, layouts,
                   [&](const ShardLayout& l, const at::Tensor& t) { return l.gather(group, t).cpu(); });
}

Value slice_optimizer_state(const Value& state, const std::vector<const ShardLayout*>& layouts) {
  return map_state(state, layouts, [](const ShardLayout& l, const at::Tensor& t) {
    // This rank's rows already (a sharded checkpoint read them): kept; when the shapes coincide this rank
    // holds every row and both mean the same.
    if (t.sizes() != c10::IntArrayRef(l.shape) && t.sizes() == c10::IntArrayRef(l.shard_shape())) return t;
    VOLT_CHECK(t.sizes() == c10::IntArrayRef(l.shape), "optimizer state of shape ", t.sizes(),
               " for a parameter of shape ", c10::IntArrayRef(l.shape), " (or its rows here, ",
               c10::IntArrayRef(l.shard_shape()), ")");
    return l.slice(t.contiguous()).clone();
  });
}

}  // namespace volt::detail

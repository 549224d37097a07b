#include "shard_layout.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "volt/error.h"

namespace volt::detail {

RowLayout RowLayout::of(c10::IntArrayRef shape, int64_t rank, int64_t world) {
  RowLayout l;
  l.shape = shape.vec();
  l.rank = rank;
  l.world = world;
  int64_t numel = 1;
  for (int64_t d : l.shape) numel *= d;
  l.rows = l.shape.empty() ? 1 : l.shape[0];
  l.row_numel = l.rows == 0 ? 0 : numel / l.rows;
  l.chunk_rows = (l.rows + world - 1) / world;
  l.valid_rows = l.rows_of(rank);
  return l;
}

int64_t RowLayout::rows_of(int64_t r) const {
  return std::max<int64_t>(0, std::min(chunk_rows, rows - r * chunk_rows));
}

std::vector<int64_t> RowLayout::shard_shape() const {
  if (shape.empty()) return valid_rows == 1 ? std::vector<int64_t>{} : std::vector<int64_t>{0};
  std::vector<int64_t> s = shape;
  s[0] = valid_rows;
  return s;
}

at::Tensor RowLayout::slice(const at::Tensor& full) const {
  return full.reshape({-1}).narrow(0, begin(), count()).view(shard_shape());
}

at::Tensor RowLayout::gather(ProcessGroup& group, const at::Tensor& shard) const {
  at::Tensor padded = at::zeros({chunk_rows * row_numel}, shard.options());
  if (count() > 0) padded.narrow(0, 0, count()).copy_(shard.reshape({-1}));
  const auto pieces = group.all_gather(padded);
  std::vector<at::Tensor> rows;
  for (int64_t r = 0; r < world; ++r) rows.push_back(pieces[r].narrow(0, 0, rows_of(r) * row_numel));
  return at::cat(rows).view(shape);
}

void clip_sharded_gradients(const std::vector<at::Tensor>& shards, ProcessGroup* group, double value,
                            const std::string& algorithm) {
  torch::NoGradGuard no_grad;
  if (algorithm != "norm") {
    for (auto shard : shards)
      if (shard.grad().defined()) shard.mutable_grad().clamp_(-value, value);
    return;
  }
  at::Tensor total = at::zeros({1}, at::TensorOptions().dtype(at::kDouble));
  for (const auto& shard : shards)
    if (shard.grad().defined() && shard.numel() > 0) total += shard.grad().to(at::kDouble).pow(2).sum().cpu();
  if (group != nullptr) group->all_reduce(total, ReduceOp::kSum);
  const double coef = value / (std::sqrt(total.item<double>()) + 1e-6);
  if (coef < 1.0)
    for (auto shard : shards)
      if (shard.grad().defined()) shard.mutable_grad().mul_(coef);
}

namespace {

template <typename Fn>
Value map_state(const Value& state, const std::vector<const RowLayout*>& layouts, Fn fn) {
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

Value gather_optimizer_state(const Value& state, const std::vector<const RowLayout*>& layouts,
                             ProcessGroup& group) {
  torch::NoGradGuard no_grad;
  // Every rank holds state for the same parameters (they step together), so the gathers line up.
  return map_state(state, layouts,
                   [&](const RowLayout& l, const at::Tensor& t) { return l.gather(group, t).cpu(); });
}

Value slice_optimizer_state(const Value& state, const std::vector<const RowLayout*>& layouts) {
  return map_state(state, layouts, [](const RowLayout& l, const at::Tensor& t) {
    VOLT_CHECK(
        t.numel() ==
            [&] {
              int64_t n = 1;
              for (int64_t d : l.shape) n *= d;
              return n;
            }(),
        "optimizer state of shape ", t.sizes(), " for a parameter of shape ", c10::IntArrayRef(l.shape));
    return l.slice(t.contiguous()).clone();
  });
}

}  // namespace volt::detail

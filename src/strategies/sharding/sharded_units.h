// The parameter bookkeeping of the sharded strategies (PyTorch's FSDP2 `fully_shard` layout): every
// parameter is split along dim 0 into world-size chunks of ceil(rows / world) rows (the last ones shorter
// or empty, as torch.chunk), each rank keeping its own rows; parameters are grouped into units (the
// auto-wrap policy's modules, the rest in a root unit) whose full values live in one storage per unit,
// all-gathered when one of the unit's parameters is first used and freed (its memory given back, the
// tensors kept) when the next unit starts, after its gradients were reduce-scattered in backward. The
// module's parameters stay the same TensorImpls (so model code, tied weights and autograd see nothing
// change); the optimizer steps this rank's rows (`shard`), which are what gets gathered next time.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/StorageImpl.h>
#include <torch/nn/module.h>

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "../grad_ready_hooks.h"
#include "shard_layout.h"
#include "storage_use_scope.h"
#include "volt/distributed/process_group.h"

namespace volt::detail {

struct ShardingPlan {
  /// Module types (their class names, with or without namespace and "Impl") that become units.
  std::vector<std::string> wrap_modules;
  /// Size-based policy: a module whose not yet wrapped parameters reach this many elements becomes a unit
  /// (PyTorch's size_based_auto_wrap_policy); 0 = off.
  int64_t wrap_min_params = 0;
  /// The gathered parameters' dtype; undefined = the dtype the shards are kept in.
  c10::optional<c10::ScalarType> param_dtype;
  /// The dtype gradients are reduced in; undefined = the gathered dtype.
  c10::optional<c10::ScalarType> reduce_dtype;
  /// Where the shards and gathered parameters live.
  c10::Device device = c10::kCPU;
};

struct ShardedParam {
  std::string name;  // its first name in named_parameters()
  at::Tensor param;  // the module's tensor: a view of its unit's storage
  ShardLayout layout;
  int64_t full_offset = 0;   // elements: start of its padded region in the unit's storage
  int64_t shard_offset = 0;  // elements: start of its chunk in the unit's shard
  at::Tensor shard;          // this rank's rows (valid_rows x shape[1:]): what the optimizer steps
  bool trainable = false;
};

struct ShardedUnit {
  std::string name;  // the wrapped module's name ("" for the root unit)
  std::vector<size_t> params;
  c10::intrusive_ptr<c10::StorageImpl> storage;  // the full parameters (no memory while freed)
  at::Tensor full;                               // 1-D over `storage`
  at::Tensor shard;                              // this rank's padded shard, 1-D
  int64_t full_numel = 0, shard_numel = 0;
  bool gathered = false;
  int pins = 0;
  size_t pending = 0;  // trainable parameters whose gradient has not arrived in this backward
  bool reduced = false;
};

class ShardedUnits : public StorageUseListener {
 public:
  /// Shards `model` (its parameters real, or deferred from configure_model()) over `group`.
  ShardedUnits(torch::nn::Module& model, std::shared_ptr<ProcessGroup> group, const ShardingPlan& plan);
  ~ShardedUnits() override;
  ShardedUnits(const ShardedUnits&) = delete;
  ShardedUnits& operator=(const ShardedUnits&) = delete;

  void before_op(const std::vector<const c10::StorageImpl*>& storages) override;
  void after_op(const std::vector<const c10::StorageImpl*>& storages) override;

  /// Before a backward: every trainable parameter's gradient is awaited.
  void prepare_for_backward();
  /// After it: reduces the units whose gradients did not all arrive (unused parameters count as zeros),
  /// then frees every unit.
  void finalize_backward();
  void free_all();

  /// This rank's rows of `param` (a module parameter), for the optimizer.
  const at::Tensor& shard_of(const at::Tensor& param) const;
  /// The sharded parameter `param` (a module parameter) is, or nullopt.
  c10::optional<size_t> index_of(const at::Tensor& param) const;
  /// Every parameter's rows, in order (what the optimizer steps).
  std::vector<at::Tensor> shards() const;

  /// `fn(param, full_values)` for every parameter, a unit gathered at a time (collective: every rank).
  void for_each_full(const std::function<void(const ShardedParam&, const at::Tensor&)>& fn);

  const std::vector<ShardedParam>& params() const { return params_; }
  const std::vector<ShardedUnit>& units() const { return units_; }
  int64_t rank() const { return rank_; }
  int64_t world() const { return world_; }
  /// How many gathers ran (tests: a unit is gathered on use, not all at once).
  int64_t gathers() const { return gathers_; }
  /// The most units gathered at once so far.
  int64_t max_gathered() const { return max_gathered_; }

 private:
  void build_units(torch::nn::Module& model, const ShardingPlan& plan);
  void lay_out(ShardedUnit& unit, c10::ScalarType shard_dtype, c10::Device device);
  void gather(ShardedUnit& unit);
  void release(ShardedUnit& unit);
  void reduce(ShardedUnit& unit);
  void mark_ready(size_t param);

  std::shared_ptr<ProcessGroup> group_;
  int64_t rank_ = 0, world_ = 1;
  c10::ScalarType param_dtype_ = at::kFloat, reduce_dtype_ = at::kFloat;
  std::vector<ShardedParam> params_;
  std::vector<ShardedUnit> units_;
  std::vector<size_t> unit_of_;  // param -> unit
  std::unordered_map<const c10::StorageImpl*, size_t> unit_of_storage_;
  std::unordered_map<const c10::TensorImpl*, size_t> param_of_impl_;
  bool busy_ = false;  // inside our own gathers and reductions
  int64_t gathers_ = 0, max_gathered_ = 0;
  std::unique_ptr<GradReadyHooks> hooks_;  // last: its hooks leave first
};

}  // namespace volt::detail

// How the sharded strategies split one tensor between the ranks of a group: along one dimension (`dim`,
// 0 for FSDP and the ZeRO stages, as PyTorch's FSDP2 and DCP chunks; another for tensor parallelism's
// column shards) into group-size chunks of ceil(size / ranks) slices, the last ones shorter or empty
// (torch.chunk). A 0-dim tensor counts as one slice. Shared by FSDP and the ZeRO stages, by their optimizer
// states and by their DCP checkpoints.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "volt/checkpoint/value.h"
#include "volt/core/enums.h"
#include "volt/distributed/process_group.h"

namespace volt::detail {

struct ShardLayout {
  std::vector<int64_t> shape;
  int64_t dim = 0;
  /// Slices along `dim`, elements per slice, slices per chunk, slices this rank holds.
  int64_t rows = 1, row_numel = 1, chunk_rows = 0, valid_rows = 0, rank = 0, world = 1;

  static ShardLayout of(c10::IntArrayRef shape, int64_t rank, int64_t world, int64_t dim = 0);
  /// Slices rank `r` holds.
  int64_t rows_of(int64_t r) const;
  /// Dim 0 only: this rank's first element and element count in the row-major flattening (its rows are
  /// contiguous there).
  int64_t begin() const;
  int64_t count() const;
  /// The shape with `dim` cut to valid_rows ({} for a 0-dim tensor this rank holds, {0} for one it does not).
  std::vector<int64_t> shard_shape() const;
  /// Where this rank's chunk starts in the full tensor (a DCP chunk's offsets).
  std::vector<int64_t> offsets() const;
  /// This rank's chunk of `full`, shaped shard_shape(): a view (of contiguous memory for dim 0).
  at::Tensor slice(const at::Tensor& full) const;
  /// The full tensor from every rank's `shard` (a collective over `group`, on the shard's device).
  at::Tensor gather(ProcessGroup& group, const at::Tensor& shard) const;
};

/// Clips gradients that are each rank's rows of the model's (the sharded strategies'): by the global 2-norm
/// across ranks ("norm": one all-reduce; `group` null = one process) or elementwise ("value").
void clip_sharded_gradients(const std::vector<at::Tensor>& shards, ProcessGroup* group, double value,
                            GradClipAlgorithm algorithm);

/// An optimizer state dict (PyTorch's layout) whose per-parameter tensors (not "step") hold this rank's
/// rows, with those tensors gathered to full shape; `layouts[i]` is optimizer parameter i's. Collective.
Value gather_optimizer_state(const Value& state, const std::vector<const ShardLayout*>& layouts,
                             ProcessGroup& group);
/// The reverse: a full optimizer state cut down to this rank's rows (a new Value; `state` is unchanged).
Value slice_optimizer_state(const Value& state, const std::vector<const ShardLayout*>& layouts);

}  // namespace volt::detail

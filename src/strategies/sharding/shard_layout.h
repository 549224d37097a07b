// How the sharded strategies split one tensor between ranks: along dim 0 into world-size chunks of
// ceil(rows / world) rows, the last ones shorter or empty (torch.chunk; PyTorch's FSDP2 and DCP chunks).
// A 0-dim tensor counts as one row. Shared by FSDP and the ZeRO stages, and by their optimizer states.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "volt/checkpoint/value.h"
#include "volt/distributed/process_group.h"

namespace volt::detail {

struct RowLayout {
  std::vector<int64_t> shape;
  int64_t rows = 1, row_numel = 1, chunk_rows = 0, valid_rows = 0, rank = 0, world = 1;

  static RowLayout of(c10::IntArrayRef shape, int64_t rank, int64_t world);
  /// Rows rank `r` owns.
  int64_t rows_of(int64_t r) const;
  /// This rank's first element and element count in the row-major flattening.
  int64_t begin() const { return rank * chunk_rows * row_numel; }
  int64_t count() const { return valid_rows * row_numel; }
  /// valid_rows x shape[1:] ({} for a 0-dim tensor this rank owns, {0} for one it does not).
  std::vector<int64_t> shard_shape() const;
  /// This rank's rows of `full` (a view when `full` is contiguous), shaped shard_shape().
  at::Tensor slice(const at::Tensor& full) const;
  /// The full tensor from every rank's `shard` (a collective).
  at::Tensor gather(ProcessGroup& group, const at::Tensor& shard) const;
};

/// Clips gradients that are each rank's rows of the model's (the sharded strategies'): by the global 2-norm
/// across ranks ("norm": one all-reduce; `group` null = one process) or elementwise ("value").
void clip_sharded_gradients(const std::vector<at::Tensor>& shards, ProcessGroup* group, double value,
                            const std::string& algorithm);

/// An optimizer state dict (PyTorch's layout) whose per-parameter tensors (not "step") hold this rank's
/// rows, with those tensors gathered to full shape; `layouts[i]` is optimizer parameter i's. Collective.
Value gather_optimizer_state(const Value& state, const std::vector<const RowLayout*>& layouts,
                             ProcessGroup& group);
/// The reverse: a full optimizer state cut down to this rank's rows (a new Value; `state` is unchanged).
Value slice_optimizer_state(const Value& state, const std::vector<const RowLayout*>& layouts);

}  // namespace volt::detail

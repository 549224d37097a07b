// The process-wide registry of skipped inits behind volt/init/uninitialized.h: the init engine
// (init_scope.cpp) records into it, uninitialized.cpp reads, replays and erases. Internal to src/init.
#pragma once

#include "volt/init/counter_rng.h"

#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/ivalue.h>
#include <c10/util/Optional.h>

#include <cstdint>
#include <utility>
#include <vector>

namespace volt::detail {

/// Where a view sits in its storage, so that a record can rebuild it from any tensor on that storage
/// without holding the storage alive.
struct ViewGeometry {
  std::vector<int64_t> sizes, strides;
  int64_t offset = 0;

  static ViewGeometry of(const at::Tensor& view);
  /// The same view, built on `base`'s storage, detached from autograd.
  at::Tensor on(const at::Tensor& base) const;
  bool operator==(const ViewGeometry& other) const {
    return sizes == other.sizes && strides == other.strides && offset == other.offset;
  }
};

/// One recorded in-place op on a tracked storage.
struct RecordedOp {
  enum class Kind { kKeyedUniform, kKeyedNormal, kBoxed };
  Kind kind = Kind::kBoxed;
  ViewGeometry target;  // keyed fills: the tensor filled
  RandomKey key;
  double a = 0, b = 0;
  // kBoxed: the op and its arguments; arguments on the tracked storage are None here and rebuilt from
  // `on_storage` at replay.
  c10::optional<c10::OperatorHandle> op;
  std::vector<c10::IValue> args;
  std::vector<std::pair<size_t, ViewGeometry>> on_storage;
};

/// Starts or extends the record of `tensor`'s storage with its skipped random init. `whole`: the op
/// rewrites every element of the storage, so what was recorded before it is dead.
void record_skipped_init(const at::Tensor& tensor, RecordedOp op, bool whole);
/// Appends a write to the record of `storage`; false when it has none (nothing to track).
bool record_write(const c10::StorageImpl* storage, RecordedOp op);
/// True while `storage` has a live record.
bool has_record(const c10::StorageImpl* storage);
/// The storage was wholly overwritten: forget its record.
void erase_record(const c10::StorageImpl* storage);

}  // namespace volt::detail

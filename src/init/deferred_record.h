// The records behind deferred init (volt/init/deferred_init.h): per meta storage built under an
// InitMode::kDeferred scope, how its values came to be — the op that created it and every write to it
// since — so that deferred_init.cpp can compute any of its elements later. The init engine
// (init_scope.cpp) records through the functions below; deferred_record.cpp keeps the registry. Internal.
#pragma once

#include "init_record.h"
#include "volt/init/counter_rng.h"

#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/ivalue.h>
#include <ATen/core/stack.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

namespace volt::detail {

struct DeferredRecord;

/// A deferred tensor as an op saw it: its storage's record, how many of that record's writes had run
/// (`version`), and where the tensor sits in the storage.
struct DeferredRef {
  std::shared_ptr<const DeferredRecord> record;
  size_t version = 0;
  ViewGeometry geometry;
};

/// An op and its arguments, replayable on real tensors. Deferred arguments are None (or undefined list
/// elements) in `args` and rebuilt from `refs`; meta devices in `args` become the target device.
struct DeferredCall {
  struct Slot {
    size_t arg = 0;
    int64_t element = -1;  // index into a tensor-list argument; -1: the argument itself
    DeferredRef ref;
  };
  c10::OperatorHandle op;
  std::vector<c10::IValue> args;
  std::vector<Slot> refs;
};

/// One write to a deferred storage, in the order model code issued them.
struct DeferredWrite {
  enum class Kind { kKeyedUniform, kKeyedNormal, kConstant, kCall };
  Kind kind = Kind::kCall;
  ViewGeometry target;
  bool whole = false;                        // rewrote every element of the storage: what came before is dead
  RandomKey key;                             // keyed fills: stream element p lands on storage position p
  double a = 0, b = 0;                       // uniform: low, high; normal: mean, std
  c10::Scalar value;                         // kConstant
  std::shared_ptr<const DeferredCall> call;  // kCall: replayed with this storage as its written argument
};

/// How a deferred storage's values begin. kEmpty, kConstant and keyed sources (and the keyed and constant
/// writes after them) can be computed for any slice alone; kCall replays an op on materialized inputs.
struct DeferredRecord {
  enum class Source { kEmpty, kConstant, kKeyedUniform, kKeyedNormal, kCall };
  Source source = Source::kEmpty;
  c10::ScalarType dtype = c10::kFloat;
  int64_t numel = 0;      // elements of the storage
  ViewGeometry geometry;  // the creating op's result within the storage
  c10::Scalar value;
  RandomKey key;
  double a = 0, b = 0;
  std::shared_ptr<const DeferredCall> call;  // kCall: result `output` (element `element` of a list)
  size_t output = 0;
  int64_t element = -1;
  std::vector<DeferredWrite> writes;  // appended under the registry's lock: read them through snapshot
};

/// The record of `tensor`'s storage, or null when it has none (not built under a deferred scope).
std::shared_ptr<const DeferredRecord> deferred_record(const at::Tensor& tensor);
/// The first `version` writes of `record`, copied under the registry's lock.
std::vector<DeferredWrite> deferred_writes(const DeferredRecord& record, size_t version);
/// How many writes `record` has now.
size_t deferred_version(const DeferredRecord& record);

/// True when some tensor argument in stack[first, end) is a deferred tensor.
bool has_deferred_argument(const torch::jit::Stack& stack, size_t first);

/// How the init engine classified an op with deferred arguments.
struct DeferredOpKind {
  bool keyed_uniform = false;  // uniform_ / normal_ that the keyed generator serves (no explicit
  bool keyed_normal = false;   // generator, InitRng::kCounter)
  bool fill = false;           // fill_ / zero_
};

/// Runs an op with deferred arguments (`redispatch`: on the meta device, as it would run anyway) and
/// records it: a keyed fill (drawing its key from `key_of`, as a materializing scope would) or constant
/// fill of a deferred tensor as such, anything else as a call to replay. `written`: the indices of the
/// arguments it writes. Throws volt::Error for ops that read values (item(), a copy to a real device...),
/// which a deferred tensor does not have until it is materialized.
void run_deferred_op(const c10::OperatorHandle& op, torch::jit::Stack* stack, size_t first,
                     DeferredOpKind kind, const std::vector<int>& written,
                     const std::function<RandomKey(const at::Tensor&)>& key_of,
                     const std::function<void()>& redispatch);

/// Runs a factory of a deferred scope (`redispatch`: on the meta device) and records its result with
/// `record`'s source; `assign_key` gives the result its creation index as a materializing scope would.
void run_deferred_factory(const c10::OperatorHandle& op, torch::jit::Stack* stack, size_t first,
                          DeferredRecord record, const std::function<void()>& redispatch,
                          const std::function<RandomKey(const at::Tensor&)>& assign_key);

}  // namespace volt::detail

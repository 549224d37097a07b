#include "storage_use_scope.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>
#include <c10/util/Optional.h>

#include <atomic>

#include "volt/config.h"

namespace volt::detail {
namespace {

// A key of its own (config.h, checked by CMake), not the init engine's, so that a scope of each kind can
// be open at once: each fallback re-dispatches below its own key, so every op reaches both, in whichever
// order the two keys sit (DeferredInit is below this key; the fallback init key is above it).
constexpr c10::DispatchKey kUseKey = c10::DispatchKey::VOLT_USE_DISPATCH_KEY;

// Process-wide, not thread-local: autograd runs CUDA backward on its device threads, which inherit the
// dispatch keys of the thread that called backward() (its ThreadLocalState) but not its thread_locals.
// The key in the thread's dispatch key set decides which threads report.
std::atomic<StorageUseListener*> g_listener{nullptr};

void collect(const c10::IValue& value, std::vector<const c10::StorageImpl*>& out) {
  auto add = [&](const at::Tensor& t) {
    if (t.defined() && t.has_storage()) out.push_back(t.storage().unsafeGetStorageImpl());
  };
  if (value.isTensor()) {
    add(value.toTensor());
  } else if (value.isTensorList()) {
    for (const at::Tensor& t : value.toTensorVector()) add(t);
  } else if (value.isList()) {
    for (const c10::IValue& element : value.toListRef())
      if (element.isTensor()) add(element.toTensor());
  }
}

void use_fallback(const c10::OperatorHandle& op, c10::DispatchKeySet keys, torch::jit::Stack* stack) {
  // What runs below this op (ATen's kernels, the listener's own collectives) is not reported again: a
  // top-level op's arguments already name every tensor it can read.
  // Except backward itself: the engine captures the dispatch keys it was called with for its own ops.
  static const c10::OperatorName backward_op("aten::_backward", "");
  c10::optional<c10::impl::ExcludeDispatchKeyGuard> no_reentry;
  if (op.operator_name() != backward_op) no_reentry.emplace(kUseKey);
  StorageUseListener* listener = g_listener.load();
  std::vector<const c10::StorageImpl*> storages;
  if (listener != nullptr) {
    const size_t count = op.schema().arguments().size();
    for (size_t i = stack->size() - count; i < stack->size(); ++i) collect((*stack)[i], storages);
  }
  if (storages.empty()) {
    op.redispatchBoxed(keys & c10::DispatchKeySet(c10::DispatchKeySet::FULL_AFTER, kUseKey), stack);
    return;
  }
  listener->before_op(storages);
  struct After {
    StorageUseListener* listener;
    const std::vector<const c10::StorageImpl*>& storages;
    ~After() { listener->after_op(storages); }
  } after{listener, storages};
  op.redispatchBoxed(keys & c10::DispatchKeySet(c10::DispatchKeySet::FULL_AFTER, kUseKey), stack);
}

void ensure_registered() {
  // Registered on first use, not by TORCH_LIBRARY_IMPL: a static library's unreferenced registrar is
  // dropped by the linker (DESIGN §7).
  static auto registration = c10::Dispatcher::singleton().registerFallback(
      kUseKey, c10::KernelFunction::makeFromBoxedFunction<&use_fallback>(), "volt sharded parameter use");
}

}  // namespace

StorageUseScope::StorageUseScope(StorageUseListener* listener)
    : previous_((ensure_registered(), g_listener.exchange(listener))), include_(kUseKey) {}

StorageUseScope::~StorageUseScope() { g_listener.store(previous_); }

}  // namespace volt::detail

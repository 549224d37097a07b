// How a sharded strategy learns, without hooks in model code, that an op is about to read a parameter:
// while a StorageUseScope is open on a thread, a boxed fallback on a dispatch key of the wrapper block
// (above Autograd, like the init engine's, DESIGN §3) hands the storages of every top-level op's tensor
// arguments to the scope's listener before the op runs, and again after it. LibTorch modules have no
// forward hooks and call their children's typed forward() directly; the dispatcher sees every op anyway,
// in forward and — because autograd replays the thread's dispatch keys in backward — in backward too.
#pragma once

#include <c10/core/StorageImpl.h>
#include <c10/core/impl/LocalDispatchKeySet.h>

#include <vector>

namespace volt::detail {

class StorageUseListener {
 public:
  virtual ~StorageUseListener() = default;
  /// Before an op runs: the storages of its tensor arguments (duplicates possible).
  virtual void before_op(const std::vector<const c10::StorageImpl*>& storages) = 0;
  /// After it ran or threw, with the same storages.
  virtual void after_op(const std::vector<const c10::StorageImpl*>& storages) = 0;
};

/// RAII: `listener` sees the thread's ops (and those of the backward it starts) until the scope closes.
/// One listener per process at a time (nested scopes restore the outer one); destroy on the thread that
/// created it. What runs inside a reported op (and so the listener's own collectives) is not reported.
class StorageUseScope {
 public:
  explicit StorageUseScope(StorageUseListener* listener);
  ~StorageUseScope();
  StorageUseScope(const StorageUseScope&) = delete;
  StorageUseScope& operator=(const StorageUseScope&) = delete;

 private:
  StorageUseListener* previous_;
  c10::impl::IncludeDispatchKeyGuard include_;
};

}  // namespace volt::detail

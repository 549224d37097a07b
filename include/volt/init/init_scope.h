// The init scope: while it is open on a thread, every tensor that code on that thread creates without an
// explicit device lands on the scope's device, every floating tensor created without an explicit dtype
// gets the scope's dtype, and parameter init follows the scope's mode and generator. Model code is not
// changed: LibTorch's dispatcher routes factory and init ops through volt first (DESIGN §3).
//
// The rule for explicit arguments: a device or dtype that code passes itself is kept, as under Lightning;
// integer and bool tensors keep their dtypes. `torch::tensor({...})` literals are built by LibTorch on the
// CPU with an explicit dtype before any op is dispatched, so they stay CPU float32: move such constants
// with `.to(...)` or register them as buffers computed from factory ops (torch::arange, torch::ones, ...).
#pragma once

#include "volt/config.h"
#include "volt/init/init_options.h"

#include <c10/core/impl/LocalDispatchKeySet.h>

#include <memory>

namespace volt {

namespace detail {
struct ScopeFrame;
}

/// RAII guard returned by `volt::init_module` and `volt::Trainer::init_module`. Thread-local (another
/// thread is untouched), nestable (the innermost scope wins), restored on exceptions. Destroy it on the
/// thread that created it.
class [[nodiscard]] InitScope {
 public:
  explicit InitScope(InitOptions options = {});
  ~InitScope();
  InitScope(const InitScope&) = delete;
  InitScope& operator=(const InitScope&) = delete;

  const InitOptions& options() const;
  /// The counter-based generator's seed for this scope.
  uint64_t seed() const;
  /// How many tensors this scope has keyed so far (its next creation index).
  uint64_t tensors_created() const;

 private:
  std::unique_ptr<detail::ScopeFrame> frame_;
  c10::impl::IncludeDispatchKeyGuard include_;
};

/// Opens an init scope (Fabric-style, without a Trainer):
/// `{ auto scope = volt::init_module(volt::InitOptions().dtype(torch::kBFloat16)); GPT model(cfg); }`
inline InitScope init_module(InitOptions options = {}) { return InitScope(std::move(options)); }

/// The options of the innermost scope open on this thread, or nullopt.
c10::optional<InitOptions> current_init_options();

}  // namespace volt

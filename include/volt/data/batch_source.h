// What the Trainer iterates: any iterable of batches, type-erased — a torch::data loader (examples or
// vectors of examples), a std::vector<volt::Batch>, or anything with begin()/end() whose items convert to
// volt::Batch. The iterable must outlive the Trainer call it is passed to.
#pragma once

#include <c10/util/Optional.h>

#include <functional>
#include <memory>
#include <type_traits>

#include "volt/core/batch.h"

namespace volt {

namespace detail {
template <typename T>
struct is_pointer_like : std::false_type {};
template <typename T, typename D>
struct is_pointer_like<std::unique_ptr<T, D>> : std::true_type {};
template <typename T>
struct is_pointer_like<std::shared_ptr<T>> : std::true_type {};
template <typename T, typename = void>
struct has_size : std::false_type {};
template <typename T>
struct has_size<T, std::void_t<decltype(std::declval<const T&>().size())>> : std::true_type {};
}  // namespace detail

class BatchSource {
 public:
  /// Called per batch; return false to stop the pass early.
  using Visitor = std::function<bool(Batch&&)>;

  BatchSource() = default;
  /// `num_batches` gives the length of iterables that do not know it (torch::data loaders), for
  /// fractional limits and the progress bar's ETA. An lvalue is referenced (it must outlive the call it is
  /// passed to); a temporary (`to_batches(...)`) is kept alive by the source.
  template <typename Iterable,
            typename = std::enable_if_t<!std::is_same_v<std::decay_t<Iterable>, BatchSource>>>
  /* implicit */ BatchSource(Iterable&& iterable, c10::optional<int64_t> num_batches = c10::nullopt) {
    using T = std::decay_t<Iterable>;
    // A const lvalue (a const std::vector<Batch>) is iterated as const.
    using Target =
        std::conditional_t<std::is_lvalue_reference_v<Iterable>, std::remove_reference_t<Iterable>, T>;
    std::shared_ptr<T> owned;
    Target* target = nullptr;
    if constexpr (std::is_lvalue_reference_v<Iterable>) {
      target = &iterable;
    } else {
      owned = std::make_shared<T>(std::move(iterable));
      target = owned.get();
    }
    if constexpr (detail::is_pointer_like<T>::value) {
      for_each_ = [owned, target](const Visitor& visit) {
        for (auto&& item : **target)
          if (!visit(Batch(item))) return;
      };
    } else {
      for_each_ = [owned, target](const Visitor& visit) {
        for (auto&& item : *target)
          if (!visit(Batch(item))) return;
      };
      if constexpr (detail::has_size<T>::value)
        if (!num_batches) num_batches = static_cast<int64_t>(target->size());
    }
    num_batches_ = num_batches;
  }

  /// A source whose pass is `for_each(visit)` (to wrap another source, e.g. volt::distributed_batches).
  static BatchSource from_visitor(std::function<void(const Visitor&)> for_each,
                                  c10::optional<int64_t> num_batches = c10::nullopt) {
    BatchSource out;
    out.for_each_ = std::move(for_each);
    out.num_batches_ = num_batches;
    return out;
  }

  explicit operator bool() const { return static_cast<bool>(for_each_); }
  /// One pass over the iterable (a new epoch for a loader).
  void for_each(const Visitor& visit) const { for_each_(visit); }
  c10::optional<int64_t> num_batches() const { return num_batches_; }

 private:
  std::function<void(const Visitor&)> for_each_;
  c10::optional<int64_t> num_batches_;
};

}  // namespace volt

// What the Trainer iterates: any iterable of batches, type-erased — a volt::DataLoader, a torch::data loader
// (examples or vectors of examples), a std::vector<volt::Batch>, or anything with begin()/end() whose items
// convert to volt::Batch. The iterable must outlive the Trainer call it is passed to. Under a distributed
// strategy the Trainer gives each rank its share (volt::shard_for_rank): a DataLoader by samples, as
// Lightning's sampler replacement; a source that is one rank's shard already as it is; any other by batches.
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
struct has_batch_source : std::false_type {};
template <typename T>
struct has_batch_source<T, std::void_t<decltype(std::declval<const T&>().batch_source())>> : std::true_type {
};
// A torch::data loader (held by unique_ptr) whose sampler shards across ranks (volt::DistributedSampler).
template <typename T, typename = void>
struct shards_across_ranks : std::false_type {};
template <typename S>
struct shards_across_ranks<S, std::void_t<decltype(S::kShardsAcrossRanks)>>
    : std::bool_constant<S::kShardsAcrossRanks> {};
template <typename T>
struct loader_of_sharding_sampler : std::false_type {};
template <template <typename, typename> class Loader, typename D, typename S>
struct loader_of_sharding_sampler<std::unique_ptr<Loader<D, S>>> : shards_across_ranks<S> {};
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
    if constexpr (detail::has_batch_source<T>::value) {
      *this = iterable.batch_source();  // a volt::DataLoader: knows its samples
      if (num_batches) num_batches_ = num_batches;
      return;
    } else {
      from_iterable(std::forward<Iterable>(iterable), num_batches);
    }
  }

  /// A source whose pass is `for_each(visit)` (to wrap another source, e.g. volt::distributed_batches).
  static BatchSource from_visitor(std::function<void(const Visitor&)> for_each,
                                  c10::optional<int64_t> num_batches = c10::nullopt) {
    BatchSource out;
    out.for_each_ = std::move(for_each);
    out.num_batches_ = num_batches;
    return out;
  }

  /// How a source that knows its samples makes rank `rank`'s share of them (volt::DataLoader sets it: a
  /// DistributedSampler over its dataset, each pass the epoch `epoch()` says; `training` shuffles, as
  /// Lightning's injected sampler does for the training loader whatever the loader's own sampler).
  using Resharder = std::function<BatchSource(int64_t num_replicas, int64_t rank, bool training,
                                              std::function<int64_t()> epoch)>;
  BatchSource& resharder(Resharder resharder) {
    resharder_ = std::move(resharder);
    return *this;
  }
  const Resharder& resharder() const { return resharder_; }
  /// Marks the source as one rank's shard of `num_replicas` (-1: of an unknown number): the Trainer uses it
  /// as it is. A torch::data loader with a volt::DistributedSampler is marked so by itself.
  BatchSource& already_sharded(int64_t num_replicas = -1) {
    shard_replicas_ = num_replicas;
    return *this;
  }
  c10::optional<int64_t> shard_replicas() const { return shard_replicas_; }

  explicit operator bool() const { return static_cast<bool>(for_each_); }
  /// One pass over the iterable (a new epoch for a loader).
  void for_each(const Visitor& visit) const { for_each_(visit); }
  c10::optional<int64_t> num_batches() const { return num_batches_; }

 private:
  template <typename Iterable>
  void from_iterable(Iterable&& iterable, c10::optional<int64_t> num_batches) {
    using T = std::decay_t<Iterable>;
    if constexpr (detail::loader_of_sharding_sampler<T>::value) shard_replicas_ = -1;
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

  std::function<void(const Visitor&)> for_each_;
  c10::optional<int64_t> num_batches_;
  Resharder resharder_;
  c10::optional<int64_t> shard_replicas_;
};

}  // namespace volt

// What volt knows about a storage (a skipped init, a deferred record), kept process-wide without keeping
// the storage alive: each entry holds its storage weakly, which also keeps the StorageImpl's address from
// being reused while the entry exists, so a live entry always describes the storage at its key. Dead
// entries leave on lookup and in sweeps whose cost is amortized over insertions. Internal.
#pragma once

#include <c10/core/Storage.h>
#include <c10/core/StorageImpl.h>
#include <c10/util/intrusive_ptr.h>

#include <algorithm>
#include <cstddef>
#include <mutex>
#include <unordered_map>

namespace volt::detail {

template <typename T>
class WeakStorageMap {
 public:
  explicit WeakStorageMap(size_t sweep_floor) : sweep_floor_(sweep_floor), sweep_at_(sweep_floor) {}

  /// Every other member is called with this held.
  std::mutex& mutex() { return mutex_; }

  T* find(const c10::StorageImpl* storage) {
    auto it = entries_.find(storage);
    if (it == entries_.end()) return nullptr;
    if (it->second.storage.expired()) {
      entries_.erase(it);
      return nullptr;
    }
    return &it->second.value;
  }
  T& insert_or_assign(const c10::Storage& storage, T value) {
    sweep();
    return entries_
        .insert_or_assign(storage.unsafeGetStorageImpl(),
                          Entry{storage.getWeakStorageImpl(), std::move(value)})
        .first->second.value;
  }
  T& find_or_insert(const c10::Storage& storage) {
    if (T* found = find(storage.unsafeGetStorageImpl())) return *found;
    return insert_or_assign(storage, T{});
  }
  void erase(const c10::StorageImpl* storage) { entries_.erase(storage); }

 private:
  struct Entry {
    c10::weak_intrusive_ptr<c10::StorageImpl> storage;
    T value;
  };
  void sweep() {
    if (entries_.size() < sweep_at_) return;
    for (auto it = entries_.begin(); it != entries_.end();)
      it = it->second.storage.expired() ? entries_.erase(it) : std::next(it);
    sweep_at_ = std::max(sweep_floor_, 2 * entries_.size());
  }

  std::mutex mutex_;
  std::unordered_map<const c10::StorageImpl*, Entry> entries_;
  size_t sweep_floor_, sweep_at_;
};

}  // namespace volt::detail

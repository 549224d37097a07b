#include "volt/init/init_stats.h"

#include "init_counters.h"

#include <atomic>
#include <chrono>

namespace volt {
namespace detail {
namespace {

// Relaxed atomics: each counter is read on its own, after the work it counts has been joined.
struct Counters {
  std::atomic<int64_t> huge_page_tensors{0}, huge_page_bytes{0}, small_tensors{0}, small_bytes{0};
  std::atomic<int64_t> prefault_nanoseconds{0}, prefault_bytes{0};
  std::atomic<int64_t> cpu_fill_nanoseconds{0}, cpu_fill_elements{0};
  std::atomic<int> cpu_fill_threads{0};
};

Counters& counters() {
  static Counters instance;
  return instance;
}

int64_t nanoseconds(double seconds) { return static_cast<int64_t>(seconds * 1e9); }

}  // namespace

double counter_clock() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void count_allocation(bool huge_pages, int64_t bytes) {
  auto& c = counters();
  (huge_pages ? c.huge_page_tensors : c.small_tensors).fetch_add(1, std::memory_order_relaxed);
  (huge_pages ? c.huge_page_bytes : c.small_bytes).fetch_add(bytes, std::memory_order_relaxed);
}

void count_prefault(double seconds, int64_t bytes) {
  counters().prefault_nanoseconds.fetch_add(nanoseconds(seconds), std::memory_order_relaxed);
  counters().prefault_bytes.fetch_add(bytes, std::memory_order_relaxed);
}

void count_cpu_fill(double seconds, int64_t elements, int threads) {
  auto& c = counters();
  c.cpu_fill_nanoseconds.fetch_add(nanoseconds(seconds), std::memory_order_relaxed);
  c.cpu_fill_elements.fetch_add(elements, std::memory_order_relaxed);
  int seen = c.cpu_fill_threads.load(std::memory_order_relaxed);
  while (threads > seen && !c.cpu_fill_threads.compare_exchange_weak(seen, threads)) {
  }
}

}  // namespace detail

InitStats init_stats() {
  const auto& c = detail::counters();
  InitStats stats;
  stats.huge_page_tensors = c.huge_page_tensors.load();
  stats.huge_page_bytes = c.huge_page_bytes.load();
  stats.small_tensors = c.small_tensors.load();
  stats.small_bytes = c.small_bytes.load();
  stats.prefault_seconds = 1e-9 * static_cast<double>(c.prefault_nanoseconds.load());
  stats.prefault_bytes = c.prefault_bytes.load();
  stats.cpu_fill_seconds = 1e-9 * static_cast<double>(c.cpu_fill_nanoseconds.load());
  stats.cpu_fill_elements = c.cpu_fill_elements.load();
  stats.cpu_fill_threads = c.cpu_fill_threads.load();
  return stats;
}

void reset_init_stats() {
  auto& c = detail::counters();
  for (auto* counter :
       {&c.huge_page_tensors, &c.huge_page_bytes, &c.small_tensors, &c.small_bytes, &c.prefault_nanoseconds,
        &c.prefault_bytes, &c.cpu_fill_nanoseconds, &c.cpu_fill_elements})
    counter->store(0);
  c.cpu_fill_threads.store(0);
}

}  // namespace volt

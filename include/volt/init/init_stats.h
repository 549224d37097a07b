// Counters of what volt's init did in this process: how long the huge-page allocator spent faulting
// memory in and the CPU generator spent filling it, which allocator served how many bytes, and on how
// many threads. `volt bench init` prints them per row, so that a row's time splits into the memory's part,
// the generator's and the rest (module construction, dispatch). They cost a clock read or two per tensor.
#pragma once

#include <cstdint>

namespace volt {

struct InitStats {
  /// Tensors the huge-page allocator mapped afresh (kHugePageThreshold bytes and up), and their bytes.
  int64_t huge_page_tensors = 0;
  int64_t huge_page_bytes = 0;
  /// CPU tensors an init scope left to LibTorch's allocator (smaller ones, or all with huge pages off),
  /// and their bytes.
  int64_t small_tensors = 0;
  int64_t small_bytes = 0;
  /// Wall time faulting fresh mappings in ahead of their fill (HugePageFaulting::kPrefault), which is
  /// mostly the kernel zeroing pages, and the bytes faulted.
  double prefault_seconds = 0;
  int64_t prefault_bytes = 0;
  /// Wall time of the counter generator's CPU fills, the elements they wrote, and the most threads one
  /// fill ran on.
  double cpu_fill_seconds = 0;
  int64_t cpu_fill_elements = 0;
  int cpu_fill_threads = 0;
};

/// The counters since the process started or since the last reset_init_stats(), over all threads.
InitStats init_stats();
void reset_init_stats();

}  // namespace volt

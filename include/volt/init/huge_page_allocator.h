// A CPU allocator that backs large tensors with transparent huge pages. On these machines a 4 KiB page
// fault costs microseconds, so writing fresh memory through LibTorch's allocator costs more than the
// writing itself (DESIGN §7); 2 MiB pages cut the faults 512-fold.
#pragma once

#include <c10/core/Allocator.h>

#include <cstddef>

namespace volt {

/// Sizes from this many bytes up are mapped with MADV_HUGEPAGE; smaller ones use LibTorch's allocator.
constexpr size_t kHugePageThreshold = size_t{2} << 20;

/// When the pages of a mapping are faulted in.
enum class HugePageFaulting {
  /// On first touch, by whoever writes (empty init: untouched memory costs nothing).
  kLazy,
  /// At allocation, by volt's init threads (run_on_init_threads), before a parallel fill writes it: on
  /// these VMs faulting huge pages from all threads first beat both one thread faulting them and the
  /// fill faulting them as it goes.
  kPrefault,
};

/// The process-wide instances; fresh mappings read as zeros until written.
c10::Allocator* huge_page_allocator(HugePageFaulting faulting = HugePageFaulting::kLazy);

/// True when `data` was allocated by huge_page_allocator() as a fresh (zero-filled) mapping.
bool is_huge_page_allocation(const c10::DataPtr& data);

}  // namespace volt

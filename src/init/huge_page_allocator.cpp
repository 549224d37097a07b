#include "volt/init/huge_page_allocator.h"

#include "init_counters.h"
#include "volt/error.h"
#include "volt/init/counter_rng.h"
#include "volt/torch_compat.h"

#include <c10/core/CPUAllocator.h>

#include <sys/mman.h>

#include <cerrno>
#include <cstdint>
#include <cstring>

namespace volt {
namespace {

constexpr size_t kHugePage = size_t{2} << 20;

struct Mapping {
  void* base;
  size_t length;
};

void unmap(void* context) {
  auto* mapping = static_cast<Mapping*>(context);
  munmap(mapping->base, mapping->length);
  delete mapping;
}

class HugePageAllocator final : public c10::Allocator {
 public:
  explicit HugePageAllocator(HugePageFaulting faulting) : faulting_(faulting) {}

  c10::DataPtr allocate(size_t bytes) VOLT_ALLOCATOR_ALLOCATE_CONST override {
    if (bytes < kHugePageThreshold) return c10::GetDefaultCPUAllocator()->allocate(bytes);
    detail::count_allocation(/*huge_pages=*/true, static_cast<int64_t>(bytes));
    const size_t length = (bytes + kHugePage - 1) / kHugePage * kHugePage;
    // Over-map by one huge page and trim, so the kernel can back the whole range with 2 MiB pages.
    void* raw = mmap(nullptr, length + kHugePage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    VOLT_CHECK(raw != MAP_FAILED, "could not map ", bytes, " bytes for a tensor: ", std::strerror(errno),
               " (free memory or lower the model size)");
    const auto start = reinterpret_cast<uintptr_t>(raw);
    const auto aligned = (start + kHugePage - 1) / kHugePage * kHugePage;
    if (aligned > start) munmap(raw, aligned - start);
    const auto tail = start + length + kHugePage - (aligned + length);
    if (tail > 0) munmap(reinterpret_cast<void*>(aligned + length), tail);
    void* base = reinterpret_cast<void*>(aligned);
    madvise(base, length, MADV_HUGEPAGE);  // advisory: without THP the mapping still works
    if (faulting_ == HugePageFaulting::kPrefault) {
      // On the init threads, each faulting in the pages of its chunks: on these VMs one thread faulting
      // 3.1 GB took 6.9-7.6 s where two took 1.1-1.4 s, in the same runs (and faulting during the fill
      // itself was slower than either).
      const double start = detail::counter_clock();
      run_on_init_threads(static_cast<int64_t>(length), [base](int64_t begin, int64_t end) {
        const auto first_page = (static_cast<size_t>(begin) + kHugePage - 1) / kHugePage * kHugePage;
        for (size_t offset = first_page; offset < static_cast<size_t>(end); offset += kHugePage)
          static_cast<volatile char*>(base)[offset] = 0;
      });
      detail::count_prefault(detail::counter_clock() - start, static_cast<int64_t>(length));
    }
    return {base, new Mapping{base, length}, &unmap, c10::Device(c10::kCPU)};
  }

  c10::DeleterFnPtr raw_deleter() const override { return nullptr; }

  VOLT_ALLOCATOR_COPY_DATA_OVERRIDE

 private:
  HugePageFaulting faulting_;
};

}  // namespace

c10::Allocator* huge_page_allocator(HugePageFaulting faulting) {
  static HugePageAllocator lazy(HugePageFaulting::kLazy), prefault(HugePageFaulting::kPrefault);
  return faulting == HugePageFaulting::kPrefault ? &prefault : &lazy;
}

bool is_huge_page_allocation(const c10::DataPtr& data) { return data.get_deleter() == &unmap; }

}  // namespace volt

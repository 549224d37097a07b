#include "volt/init/huge_page_allocator.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <vector>

TEST(HugePageAllocator, LargeAllocationsAreAlignedZeroedAndTagged) {
  auto* allocator = volt::huge_page_allocator();
  const size_t bytes = (size_t{5} << 20) + 123;
  auto data = allocator->allocate(bytes);
  ASSERT_NE(data.get(), nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(data.get()) % (size_t{2} << 20), 0u);
  EXPECT_TRUE(volt::is_huge_page_allocation(data));
  const auto* bytes_view = static_cast<const unsigned char*>(data.get());
  for (size_t i = 0; i < bytes; i += 4093) ASSERT_EQ(bytes_view[i], 0) << i;
  std::memset(data.get(), 7, bytes);  // all of it is writable
}

TEST(HugePageAllocator, SmallAllocationsUseLibTorchsAllocator) {
  auto data = volt::huge_page_allocator()->allocate(1024);
  ASSERT_NE(data.get(), nullptr);
  EXPECT_FALSE(volt::is_huge_page_allocation(data));
}

TEST(HugePageAllocator, TensorsReleaseTheirMappingWhenFreed) {
  void* address = nullptr;
  {
    at::Tensor tensor =
        at::detail::empty_generic({8 << 20}, volt::huge_page_allocator(),
                                  c10::DispatchKeySet(c10::DispatchKey::CPU), c10::kFloat, c10::nullopt);
    tensor.fill_(3.0f);
    ASSERT_EQ(tensor[12345].item<float>(), 3.0f);
    address = tensor.data_ptr();
    unsigned char resident = 0;
    ASSERT_EQ(mincore(address, 4096, &resident), 0);
  }
  unsigned char resident = 0;
  EXPECT_EQ(mincore(address, 4096, &resident), -1);  // unmapped: ENOMEM
  EXPECT_EQ(errno, ENOMEM);
}

TEST(HugePageAllocator, PrefaultedAllocationsAreResidentBeforeTheFirstWrite) {
  // Faulted in by volt's init threads at allocation (several chunks, so more than one thread takes part).
  const int previous = at::get_num_threads();
  at::set_num_threads(2);
  const size_t bytes = size_t{64} << 20;
  auto data = volt::huge_page_allocator(volt::HugePageFaulting::kPrefault)->allocate(bytes);
  at::set_num_threads(previous);
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  std::vector<unsigned char> resident((bytes + page - 1) / page);
  ASSERT_EQ(mincore(data.get(), bytes, resident.data()), 0) << std::strerror(errno);
  // Every huge page's first page at least (all of it where the kernel backs it with a huge page).
  for (size_t i = 0; i < resident.size(); i += (size_t{2} << 20) / page)
    ASSERT_TRUE(resident[i] & 1) << "page " << i << " not faulted in";
  const auto* view = static_cast<const unsigned char*>(data.get());
  for (size_t i = 0; i < bytes; i += 4093) ASSERT_EQ(view[i], 0) << i;
}

// The one home of differences between the LibTorch versions volt supports (Debian's 1.13.1 and 2.x).
// Code elsewhere calls these names and never tests TORCH_VERSION itself.
#pragma once

#include <c10/core/Allocator.h>
#include <torch/version.h>

#define VOLT_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) || (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

namespace volt::compat {

// c10::Allocator::allocate lost its const in 2.3, and 2.3 added a pure virtual copy_data.
#if VOLT_TORCH_AT_LEAST(2, 3)
#define VOLT_ALLOCATOR_ALLOCATE_CONST
#define VOLT_ALLOCATOR_COPY_DATA_OVERRIDE                                         \
  void copy_data(void* dest, const void* src, std::size_t count) const override { \
    default_copy_data(dest, src, count);                                          \
  }
#else
#define VOLT_ALLOCATOR_ALLOCATE_CONST const
#define VOLT_ALLOCATOR_COPY_DATA_OVERRIDE
#endif

// "1.13.1" / "2.15.0": the LibTorch volt was compiled against.
inline const char* torch_version() { return TORCH_VERSION; }

}  // namespace volt::compat

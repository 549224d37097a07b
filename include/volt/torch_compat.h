// The one home of differences between the LibTorch versions volt supports (Debian's 1.13.1 and 2.x).
// Code elsewhere calls these names and never tests TORCH_VERSION itself.
#pragma once

#include <ATen/autocast_mode.h>
#include <c10/core/Allocator.h>
#include <torch/optim/optimizer.h>
#include <torch/version.h>

#include <sstream>
#include <string>
#include <type_traits>
#include <utility>

#define VOLT_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) || (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

namespace c10d {
class ProcessGroup;
class Backend;
}  // namespace c10d

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

// Optimizers key per-parameter state by the parameter's TensorImpl: as a string in 1.13, as void* later.
using OptimizerStateKey =
    typename std::decay_t<decltype(std::declval<torch::optim::Optimizer&>().state())>::key_type;
template <typename Key = OptimizerStateKey>
Key optimizer_state_key(const at::Tensor& param) {
  if constexpr (std::is_same_v<Key, std::string>) {
    std::ostringstream key;  // as 1.13's c10::guts::to_string writes the pointer
    key << param.unsafeGetTensorImpl();
    return key.str();
  } else
    return param.unsafeGetTensorImpl();
}

// Autocast's thread-local switches: per-device functions since 2.4 (set_cpu_enabled & co. before).
inline bool autocast_enabled(c10::DeviceType device) {
#if VOLT_TORCH_AT_LEAST(2, 4)
  return at::autocast::is_autocast_enabled(device);
#else
  return device == c10::kCPU ? at::autocast::is_cpu_enabled() : at::autocast::is_enabled();
#endif
}
inline void set_autocast_enabled(c10::DeviceType device, bool enabled) {
#if VOLT_TORCH_AT_LEAST(2, 4)
  at::autocast::set_autocast_enabled(device, enabled);
#else
  if (device == c10::kCPU)
    at::autocast::set_cpu_enabled(enabled);
  else
    at::autocast::set_enabled(enabled);
#endif
}
inline c10::ScalarType autocast_dtype(c10::DeviceType device) {
#if VOLT_TORCH_AT_LEAST(2, 4)
  return at::autocast::get_autocast_dtype(device);
#else
  return device == c10::kCPU ? at::autocast::get_autocast_cpu_dtype()
                             : at::autocast::get_autocast_gpu_dtype();
#endif
}
inline void set_autocast_dtype(c10::DeviceType device, c10::ScalarType dtype) {
#if VOLT_TORCH_AT_LEAST(2, 4)
  at::autocast::set_autocast_dtype(device, dtype);
#else
  if (device == c10::kCPU)
    at::autocast::set_autocast_cpu_dtype(dtype);
  else
    at::autocast::set_autocast_gpu_dtype(dtype);
#endif
}

// The class of c10d's ProcessGroupGloo and ProcessGroupNCCL whose allreduce, broadcast, ... volt calls
// directly: c10d::Backend since 2.0, c10d::ProcessGroup before. Both return a c10d::Work (Work.hpp).
#if VOLT_TORCH_AT_LEAST(2, 0)
using C10dBackend = c10d::Backend;
#else
using C10dBackend = c10d::ProcessGroup;
#endif

// TCPStore's wire protocol: 2.x clients open with a VALIDATE query and number their queries from it, so
// LibTorch 1.13's client cannot use the store a PyTorch 2.x torchrun agent serves (checked: 1.13.1 client
// against the 2.15 agent store resets or hangs; the 2.15 wheel's store/TCPStoreBackend.hpp shows the enum).
constexpr bool kTcpStoreSpeaksTorch2Protocol = VOLT_TORCH_AT_LEAST(2, 0);

// "1.13.1" / "2.15.0": the LibTorch volt was compiled against.
inline const char* torch_version() { return TORCH_VERSION; }

}  // namespace volt::compat

#include "volt/core/accelerator.h"

#include "volt/error.h"

#include <torch/cuda.h>

namespace volt {

bool Accelerator::cuda_available() { return torch::cuda::is_available(); }

int64_t Accelerator::cuda_device_count() { return static_cast<int64_t>(torch::cuda::device_count()); }

Accelerator::Accelerator(const std::string& name, int64_t devices) {
  VOLT_CHECK(devices == -1 || devices >= 1, "devices must be a positive count or -1 (all), got ", devices);
  if (name == "auto") {
    type_ = cuda_available() ? "cuda" : "cpu";
  } else if (name == "cpu") {
    type_ = "cpu";
  } else if (name == "cuda" || name == "gpu") {
    VOLT_CHECK(cuda_available(), "accelerator '", name,
               "' was requested but no CUDA GPU is visible (this LibTorch ",
               "may lack CUDA, or no driver/GPU is present): use accelerator \"cpu\" or \"auto\"");
    type_ = "cuda";
  } else {
    VOLT_FAIL("unknown accelerator '", name, "': use one of cpu, cuda, gpu, auto");
  }

  if (type_ == "cuda") {
    const auto available = cuda_device_count();
    const auto count = devices == -1 ? available : devices;
    VOLT_CHECK(count <= available, "devices=", devices, " asks for more CUDA devices than the ", available,
               " visible: lower devices or set CUDA_VISIBLE_DEVICES");
    for (int64_t i = 0; i < count; ++i) devices_.emplace_back(c10::kCUDA, static_cast<c10::DeviceIndex>(i));
  } else {
    // CPU "devices" are processes (for DDP on CPU); each one places its model on the CPU.
    const auto count = devices == -1 ? int64_t{1} : devices;
    devices_.assign(static_cast<size_t>(count), c10::Device(c10::kCPU));
  }
}

c10::Device Accelerator::device_for_local_rank(int64_t local_rank) const {
  VOLT_CHECK(local_rank >= 0 && local_rank < static_cast<int64_t>(devices_.size()), "local rank ", local_rank,
             " is outside the ", devices_.size(), " devices of this run");
  return devices_[static_cast<size_t>(local_rank)];
}

}  // namespace volt

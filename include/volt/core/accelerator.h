// Where training runs: Lightning's accelerator strings ("cpu", "cuda"/"gpu", "auto") and `devices`,
// resolved against what this machine has.
#pragma once

#include <c10/core/Device.h>

#include <string>
#include <vector>

namespace volt {

class Accelerator {
 public:
  /// `name`: "cpu", "cuda" (or its alias "gpu"), or "auto" (CUDA when a GPU is visible, else CPU).
  /// `devices`: how many devices to use; -1 means all visible ones. Throws volt::Error for unknown names,
  /// for CUDA on a machine without a visible GPU, and for more devices than exist.
  explicit Accelerator(const std::string& name = "auto", int64_t devices = 1);

  /// "cpu" or "cuda": what "auto" resolved to.
  const std::string& type() const { return type_; }
  c10::DeviceType device_type() const { return type_ == "cuda" ? c10::kCUDA : c10::kCPU; }
  /// The devices of this process's run, in order (all `cpu` for CPU processes).
  const std::vector<c10::Device>& devices() const { return devices_; }
  /// The device the local rank `local_rank` places its model on.
  c10::Device device_for_local_rank(int64_t local_rank = 0) const;

  static bool cuda_available();
  static int64_t cuda_device_count();

 private:
  std::string type_;
  std::vector<c10::Device> devices_;
};

}  // namespace volt

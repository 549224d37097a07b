// A process group that promises a device other than the CPU — the fake accelerator of fake_device.h —
// and refuses, as NCCL refuses a CPU tensor, any tensor not on it; the collectives themselves run on the
// Gloo group it wraps, over CPU aliases of the same memory. A strategy or checkpoint that would hand a
// CPU tensor to a CUDA-only backend fails under it on a machine without a GPU. Every tensor it was handed
// is counted, so that a test can show the checks ran.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "fake_device.h"
#include "volt/distributed/process_group.h"
#include "volt/error.h"

namespace volt::testing {

class DeviceCheckingGroup final : public ProcessGroup {
 public:
  explicit DeviceCheckingGroup(std::shared_ptr<ProcessGroup> inner) : inner_(std::move(inner)) {
    enable_fake_device();
  }

  int64_t rank() const override { return inner_->rank(); }
  int64_t size() const override { return inner_->size(); }
  std::string backend() const override { return "device-checking " + inner_->backend(); }
  c10::Device device() const override { return fake_device(); }
  int64_t global_rank(int64_t rank) const override { return inner_->global_rank(rank); }
  std::shared_ptr<ProcessGroup> new_group(const std::vector<int64_t>& ranks) override {
    auto group = inner_->new_group(ranks);
    return group ? std::make_shared<DeviceCheckingGroup>(group) : nullptr;
  }

  void all_reduce(at::Tensor& tensor, ReduceOp op) override {
    at::Tensor host = checked("all_reduce", tensor);
    inner_->all_reduce(host, op);
  }
  std::unique_ptr<CollectiveWork> all_reduce_async(at::Tensor& tensor, ReduceOp op) override {
    at::Tensor host = checked("all_reduce_async", tensor);
    return inner_->all_reduce_async(host, op);
  }
  void broadcast(at::Tensor& tensor, int64_t src) override {
    at::Tensor host = checked("broadcast", tensor);
    inner_->broadcast(host, src);
  }
  std::vector<at::Tensor> all_gather(const at::Tensor& tensor) override {
    auto gathered = inner_->all_gather(checked("all_gather", tensor));
    for (auto& t : gathered) t = fake_alias(t);  // results on the group's device, as NCCL's
    return gathered;
  }
  at::Tensor reduce_scatter(const at::Tensor& input, ReduceOp op) override {
    return fake_alias(inner_->reduce_scatter(checked("reduce_scatter", input), op));
  }
  void barrier() override { inner_->barrier(); }

  /// Tensors handed to this group (and to the subgroups it made) so far.
  static int64_t checked_tensors() { return counter(); }

 private:
  static std::atomic<int64_t>& counter() {
    static std::atomic<int64_t> count{0};
    return count;
  }
  at::Tensor checked(const char* op, const at::Tensor& tensor) const {
    VOLT_CHECK(tensor.defined() && tensor.device() == fake_device(), "device check: ", op, " was handed a ",
               tensor.defined() ? tensor.device().str() : std::string("undefined"),
               " tensor, but the group's collectives take tensors on ", fake_device().str(),
               " only (as NCCL takes CUDA tensors only)");
    ++counter();
    // Gloo reads and writes the same memory through a CPU alias; a non-contiguous tensor is the
    // inner group's business, as it would be NCCL's.
    return host_alias(tensor);
  }

  std::shared_ptr<ProcessGroup> inner_;
};

}  // namespace volt::testing

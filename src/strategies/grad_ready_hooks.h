// When each parameter's gradient is ready in a backward: a post-hook on the parameter's AccumulateGrad
// node (where c10d's Reducer hooks in), calling `ready(i)` for params[i]. DDP's buckets and FSDP's units
// start their communication from it. The hooks leave the nodes with this object, and a hook that fires
// after it is gone does nothing.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/csrc/autograd/variable.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace volt::detail {

class GradReadyHooks {
 public:
  /// `what` names the caller in errors ("DDP", "FSDP"); every parameter must be a leaf that requires grad.
  GradReadyHooks(const std::vector<at::Tensor>& params, std::function<void(size_t)> ready,
                 const std::string& what);
  ~GradReadyHooks();
  GradReadyHooks(const GradReadyHooks&) = delete;
  GradReadyHooks& operator=(const GradReadyHooks&) = delete;

 private:
  // Kept alive, as the Reducer does (a shared_ptr in LibTorch 1.13, an intrusive_ptr in 2.x).
  using NodePtr = decltype(torch::autograd::impl::grad_accumulator(std::declval<const at::Tensor&>()));
  std::vector<NodePtr> accumulators_;
  std::vector<uintptr_t> keys_;
  std::shared_ptr<std::function<void(size_t)>> ready_;  // the hooks hold it weakly
};

}  // namespace volt::detail

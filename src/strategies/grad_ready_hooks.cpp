#include "grad_ready_hooks.h"

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/utils/lambda_post_hook.h>

#include "volt/error.h"

namespace volt::detail {

GradReadyHooks::GradReadyHooks(const std::vector<at::Tensor>& params, std::function<void(size_t)> ready,
                               const std::string& what)
    : ready_(std::make_shared<std::function<void(size_t)>>(std::move(ready))) {
  std::weak_ptr<std::function<void(size_t)>> weak = ready_;
  for (size_t k = 0; k < params.size(); ++k) {
    auto accumulator = torch::autograd::impl::grad_accumulator(params[k]);
    VOLT_CHECK(accumulator != nullptr, what, ": parameter ", k, " is not a leaf that accumulates gradients");
    keys_.push_back(accumulator->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
        [weak, k](const torch::autograd::variable_list& outputs, const torch::autograd::variable_list&) {
          if (auto ready = weak.lock()) (*ready)(k);
          return outputs;
        })));
    accumulators_.push_back(std::move(accumulator));
  }
}

GradReadyHooks::~GradReadyHooks() {
  ready_.reset();
  for (size_t k = 0; k < accumulators_.size(); ++k) accumulators_[k]->del_post_hook(keys_[k]);
}

}  // namespace volt::detail

// Parameters as PyTorch sees them: a tensor tied under two names (an output head sharing the token
// embedding) is one parameter. LibTorch's `parameters()` lists it once per name, so an optimizer built from
// it steps the tensor twice, norm clipping counts its gradient twice and PyTorch's optimizer state does not
// fit; hand on unique_parameters() instead, as PyTorch's `module.parameters()` does.
//
//   struct LM : volt::Module {
//     LM() {
//       wte = register_module("wte", torch::nn::Embedding(vocab, dim));
//       lm_head = register_module("lm_head", torch::nn::Linear(torch::nn::LinearOptions(dim,
//       vocab).bias(false))); volt::tie_parameter(lm_head, lm_head->weight, wte->weight);  // PyTorch:
//       lm_head.weight = wte.weight
//     }
//     volt::OptimizerConfig configure_optimizers() override {
//       return volt::OptimizerConfig(std::make_shared<torch::optim::AdamW>(volt::unique_parameters(*this)));
//     }
//   };
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <string>
#include <utility>
#include <vector>

namespace volt {

/// Every parameter of `module` and its descendants once (by TensorImpl identity), in the order of its
/// first name in `named_parameters()`: PyTorch's `module.parameters()`.
std::vector<at::Tensor> unique_parameters(const torch::nn::Module& module);

/// The same with the first name each was registered under: PyTorch's `module.named_parameters()`.
std::vector<std::pair<std::string, at::Tensor>> named_unique_parameters(const torch::nn::Module& module);

/// Every buffer (persistent or not) once, in first-name order: PyTorch's `module.buffers()`. Placement
/// and precision conversion move each tensor once.
std::vector<at::Tensor> unique_buffers(const torch::nn::Module& module);

/// Ties a parameter as PyTorch's `owner.weight = target` does: `member` (the layer's own field, e.g.
/// `lm_head->weight`) and the entry `owner` registered it under both become `target` itself — one
/// TensorImpl, one gradient; state_dict() lists it under both names. Tie before building an optimizer (it
/// holds the tensors it was given). Throws volt::Error when `member` is not a parameter of `owner` or
/// the shapes differ.
void tie_parameter(torch::nn::Module& owner, at::Tensor& member, const at::Tensor& target);

/// For a layer held by its ModuleHolder: `volt::tie_parameter(lm_head, lm_head->weight, wte->weight)`.
template <typename Impl>
void tie_parameter(torch::nn::ModuleHolder<Impl>& owner, at::Tensor& member, const at::Tensor& target) {
  tie_parameter(*owner, member, target);
}

}  // namespace volt

// One batch as the Trainer hands it to a module's steps: LibTorch's `torch::data::Example<>` shape (data
// and an optional target), so torch::data loaders feed a volt::Module unchanged.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/data/example.h>

#include <vector>

namespace volt {

struct Batch {
  Batch() = default;
  Batch(at::Tensor data, at::Tensor target = {}) : data(std::move(data)), target(std::move(target)) {}
  /* implicit */ Batch(const torch::data::Example<>& example) : data(example.data), target(example.target) {}
  /// A torch::data loader without a Stack transform yields vectors of examples: they are stacked here.
  /* implicit */ Batch(const std::vector<torch::data::Example<>>& examples);

  at::Tensor data;
  at::Tensor target;

  /// Examples in the batch (the size of data's first dimension; 1 for a scalar).
  int64_t size() const { return data.defined() && data.dim() > 0 ? data.size(0) : 1; }
  /// On `device`; floating tensors cast to `float_dtype` when given (the "-true" precisions).
  Batch to(c10::Device device, c10::optional<c10::ScalarType> float_dtype = c10::nullopt) const;
};

}  // namespace volt

// What a volt::DataLoader reads (PyTorch's map-style Dataset, fetched a batch of indices at a time as
// torch::data's BatchDataset): `size()` samples, any subset of them as one Batch. The loader owns the
// order, so the Trainer can give each rank its samples as Lightning does.
//
//   auto data = std::make_shared<volt::TensorDataset>(images, labels);
//   volt::DataLoader loader(data, volt::DataLoaderOptions().batch_size(64).shuffle(true));
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "volt/core/batch.h"

namespace volt {

class Dataset {
 public:
  virtual ~Dataset() = default;
  /// Samples in the dataset.
  virtual int64_t size() const = 0;
  /// The samples at `indices`, in that order, as one batch.
  virtual Batch get_batch(const std::vector<int64_t>& indices) const = 0;
};

/// PyTorch's TensorDataset: sample i is row i of `data` (and of `target`, when given).
class TensorDataset : public Dataset {
 public:
  explicit TensorDataset(at::Tensor data, at::Tensor target = {});
  int64_t size() const override { return data_.size(0); }
  Batch get_batch(const std::vector<int64_t>& indices) const override;

 private:
  at::Tensor data_, target_;
};

}  // namespace volt

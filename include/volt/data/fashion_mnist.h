// Fashion-MNIST (Zalando's 28x28 grey images of 10 clothing classes) from the gzip IDX files that Debian's
// `dataset-fashion-mnist` package installs: a torch::data dataset whose batches are gathered in one
// index_select, so that a loader does not stack 60000 single examples per epoch.
//
//   auto data = volt::data::FashionMNIST(volt::data::FashionMNIST::kTrain);
//   auto loader = torch::data::make_data_loader(data,
//   torch::data::samplers::RandomSampler(data.size().value()),
//                                               torch::data::DataLoaderOptions(128));
#pragma once

#include <torch/data/datasets/base.h>
#include <torch/data/example.h>

#include <string>

namespace volt::data {

class FashionMNIST : public torch::data::datasets::BatchDataset<FashionMNIST, torch::data::Example<>> {
 public:
  enum Split { kTrain, kTest };
  /// Debian's dataset-fashion-mnist installs here.
  static constexpr const char* kDefaultRoot = "/usr/share/datasets/fashion-mnist";
  static const char* const kClassNames[10];

  /// Reads `train-*` or `t10k-*` from `root`; a missing file throws volt::Error naming the package.
  explicit FashionMNIST(Split split, const std::string& root = kDefaultRoot);

  /// images float32 [n, 1, 28, 28] in [0, 1] (normalized by `mean`/`std` when set), labels int64 [n].
  torch::data::Example<> get_batch(c10::ArrayRef<size_t> indices) override;
  c10::optional<size_t> size() const override { return static_cast<size_t>(labels_.size(0)); }

  /// Examples [begin, end) (a validation split held out of the training set), sharing memory.
  FashionMNIST subset(int64_t begin, int64_t end) const;
  /// Subtracts `mean` and divides by `std` (0.2860 and 0.3530 are the training set's).
  FashionMNIST& normalize(double mean = 0.2860, double std = 0.3530);
  const at::Tensor& images() const& { return images_; }
  at::Tensor images() && { return images_; }
  const at::Tensor& labels() const& { return labels_; }
  at::Tensor labels() && { return labels_; }

 private:
  FashionMNIST() = default;
  at::Tensor images_, labels_;
};

/// Reads one gzip'd (or plain) IDX file: magic 0x0000TTDD (type TT = 0x08 unsigned bytes, DD dims),
/// big-endian dimensions, then the data. Throws volt::Error naming the file and the defect.
at::Tensor read_idx_file(const std::string& path);

}  // namespace volt::data

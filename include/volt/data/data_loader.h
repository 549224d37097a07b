// PyTorch's DataLoader over a volt::Dataset, with the sampler semantics Lightning's Trainer relies on: in a
// distributed run the Trainer replaces the loader's sampler with a DistributedSampler over the same
// dataset (each rank its own samples, reshuffled per epoch from seed + epoch, batched as before), instead of
// handing whole batches out round-robin. A loader that is one rank's shard already (`shard(...)`, or a
// torch::data loader with a volt::DistributedSampler) is never sharded again.
//
//   volt::DataLoader loader(std::make_shared<volt::TensorDataset>(x, y),
//                           volt::DataLoaderOptions().batch_size(32).shuffle(true));
//   trainer.fit(model, loader);  // under DDP: this rank's samples, as Lightning's DistributedSampler picks
#pragma once

#include <torch/arg.h>

#include <cstdint>
#include <functional>
#include <memory>

#include "volt/data/batch_source.h"
#include "volt/data/dataset.h"

namespace volt {

struct DataLoaderOptions {
  TORCH_ARG(int64_t, batch_size) = 1;
  /// A new order of the samples every epoch (LibTorch's randperm from seed + epoch, DistributedSampler's
  /// scheme), else the dataset's order.
  TORCH_ARG(bool, shuffle) = false;
  TORCH_ARG(uint64_t, seed) = 0;
  /// Drop a last batch smaller than batch_size.
  TORCH_ARG(bool, drop_last) = false;
};

class DataLoader {
 public:
  DataLoader(std::shared_ptr<const Dataset> dataset, DataLoaderOptions options = {});

  /// Rank `rank`'s loader of `num_replicas`: DataLoader(dataset, sampler=DistributedSampler(dataset,
  /// num_replicas, rank, shuffle, seed)) with this loader's batch size and drop_last; `shuffle` unset is
  /// this loader's.
  DataLoader shard(int64_t num_replicas, int64_t rank, c10::optional<bool> shuffle = c10::nullopt) const;
  bool is_shard() const { return num_replicas_ > 1; }
  int64_t num_replicas() const { return num_replicas_; }

  /// Batches per pass.
  int64_t size() const;
  /// The sample indices of epoch `epoch`, in order (this rank's, for a shard).
  std::vector<int64_t> indices(int64_t epoch) const;
  /// One pass over epoch `epoch`'s batches; return false from `visit` to stop.
  void for_each(int64_t epoch, const BatchSource::Visitor& visit) const;

  /// The loader as the Trainer iterates it: each pass is the epoch `epoch()` says (without one, the passes
  /// count the epochs), and the Trainer can reshard it by samples.
  BatchSource batch_source(std::function<int64_t()> epoch = {}) const;

  const DataLoaderOptions& options() const { return options_; }
  const std::shared_ptr<const Dataset>& dataset() const { return dataset_; }

 private:
  std::shared_ptr<const Dataset> dataset_;
  DataLoaderOptions options_;
  int64_t num_replicas_ = 1, rank_ = 0;
};

}  // namespace volt

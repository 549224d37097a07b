// PyTorch's DistributedSampler: each rank visits a disjoint shard of a dataset, reshuffled every epoch from
// (seed + epoch), padded with the first indices so that every rank gets as many (or trimmed, drop_last).
// As a torch::data sampler for datasets, and over the batches of any sized volt::BatchSource — what the
// Trainer applies under a distributed strategy.
//
//   auto loader = torch::data::make_data_loader(dataset,
//       volt::DistributedSampler(dataset.size().value(),
//       volt::DistributedSamplerOptions().num_replicas(2).rank(r)), torch::data::DataLoaderOptions(64));
#pragma once

#include <torch/arg.h>
#include <torch/data/samplers/base.h>

#include <functional>
#include <memory>
#include <vector>

#include "volt/data/batch_source.h"

namespace volt {

struct DistributedSamplerOptions {
  TORCH_ARG(int64_t, num_replicas) = 1;
  TORCH_ARG(int64_t, rank) = 0;
  TORCH_ARG(bool, shuffle) = true;
  TORCH_ARG(uint64_t, seed) = 0;
  TORCH_ARG(bool, drop_last) = false;
};

/// The indices rank `options.rank()` visits in epoch `epoch` of a dataset of `size`, in order: exactly
/// PyTorch's `list(DistributedSampler(...))` after `set_epoch(epoch)` (the permutation is LibTorch's
/// randperm from a generator seeded with seed + epoch, as PyTorch's of the same version).
std::vector<int64_t> distributed_indices(int64_t size, const DistributedSamplerOptions& options,
                                         int64_t epoch);

class DistributedSampler : public torch::data::samplers::Sampler<> {
 public:
  /// A loader with this sampler is one rank's shard: the Trainer never shards it again (BatchSource).
  static constexpr bool kShardsAcrossRanks = true;

  DistributedSampler(size_t size, DistributedSamplerOptions options);
  /// The next epoch's shuffle (PyTorch's set_epoch); also advanced by one at every reset() after the first,
  /// since a torch::data loader keeps its own copy of the sampler and resets it at each pass.
  void set_epoch(int64_t epoch);
  int64_t epoch() const { return epoch_; }
  /// Indices per rank and epoch.
  size_t num_samples() const;

  void reset(c10::optional<size_t> new_size = c10::nullopt) override;
  c10::optional<std::vector<size_t>> next(size_t batch_size) override;
  void save(torch::serialize::OutputArchive& archive) const override;
  void load(torch::serialize::InputArchive& archive) override;

 private:
  size_t size_;
  DistributedSamplerOptions options_;
  int64_t epoch_ = 0;
  bool started_ = false;
  std::vector<int64_t> indices_;
  size_t position_ = 0;
};

/// This rank's batches of `source` (its length must be known): batch i goes to the rank PyTorch's
/// DistributedSampler gives index i in epoch `epoch()`; without shuffle, rank r visits batches r, r + N, ...
/// Batches come in the source's order; padding repeats the first batches at the end of the pass.
BatchSource distributed_batches(const BatchSource& source, DistributedSamplerOptions options,
                                std::function<int64_t()> epoch = {});

/// Rank `rank`'s share of `source` in a run of `num_replicas`, as the Trainer takes it
/// (TrainerOptions::use_distributed_sampler): a source that reshards by samples (volt::DataLoader) gets
/// Lightning's DistributedSampler (shuffled for `training`, else as the loader shuffles); one that is a
/// shard already is used as it is (a shard of another world size is a volt::Error); any other iterable is
/// split by batches (distributed_batches, no shuffle).
BatchSource shard_for_rank(const BatchSource& source, int64_t num_replicas, int64_t rank, bool training,
                           std::function<int64_t()> epoch = {});

}  // namespace volt

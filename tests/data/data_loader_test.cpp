// volt::DataLoader and the Trainer's sharding of loaders: by samples as Lightning's sampler replacement,
// a loader already sharded never sharded again, other iterables by batches.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <set>

#include "volt/data/data_loader.h"
#include "volt/data/distributed_sampler.h"
#include "volt/error.h"

namespace volt::testing {
namespace {

// Sample i holds the value i, so a batch names its samples.
std::shared_ptr<TensorDataset> numbered(int64_t n) {
  return std::make_shared<TensorDataset>(at::arange(n, at::kLong).unsqueeze(1), at::arange(n, at::kLong));
}

std::vector<std::vector<int64_t>> pass(const BatchSource& source) {
  std::vector<std::vector<int64_t>> batches;
  source.for_each([&](Batch&& b) {
    const auto t = b.target.contiguous();
    batches.emplace_back(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
    return true;
  });
  return batches;
}

// A torch::data dataset of 12 numbered examples.
struct Numbers : torch::data::datasets::Dataset<Numbers> {
  torch::data::Example<> get(size_t i) override {
    return {at::full({1}, static_cast<double>(i)), at::full({}, static_cast<int64_t>(i))};
  }
  c10::optional<size_t> size() const override { return 12; }
};

}  // namespace

TEST(DataLoader, BatchesTheDatasetInOrderOrShuffledPerEpoch) {
  const DataLoader plain(numbered(10), DataLoaderOptions().batch_size(4));
  EXPECT_EQ(plain.size(), 3);
  EXPECT_EQ(pass(plain), (std::vector<std::vector<int64_t>>{{0, 1, 2, 3}, {4, 5, 6, 7}, {8, 9}}));
  const DataLoader dropping(numbered(10), DataLoaderOptions().batch_size(4).drop_last(true));
  EXPECT_EQ(dropping.size(), 2);
  EXPECT_EQ(pass(dropping).size(), 2u);
  // Shuffled: epoch e is LibTorch's randperm from seed + e (PyTorch's DistributedSampler scheme); each
  // pass of the Trainer's source is the next epoch.
  const DataLoader shuffled(numbered(10), DataLoaderOptions().batch_size(10).shuffle(true).seed(7));
  const BatchSource source = shuffled;
  const auto first = pass(source)[0], second = pass(source)[0];
  EXPECT_EQ(first, shuffled.indices(0));
  EXPECT_EQ(second, shuffled.indices(1));
  EXPECT_NE(first, second);
  EXPECT_EQ(std::set<int64_t>(first.begin(), first.end()).size(), 10u);
}

TEST(ShardForRank, ALoaderIsShardedBySamplesAsLightningsDistributedSampler) {
  // Lightning's training loader: DistributedSampler(dataset, shuffle=True, seed=0) whatever the loader's
  // own order, batched as before. Each rank's batches hold exactly its sampler's samples.
  const DataLoader loader(numbered(22), DataLoaderOptions().batch_size(4));
  std::set<int64_t> all;
  for (int64_t rank = 0; rank < 3; ++rank) {
    const BatchSource mine = shard_for_rank(loader, 3, rank, /*training=*/true, [] { return int64_t{2}; });
    const auto expected =
        distributed_indices(22, DistributedSamplerOptions().num_replicas(3).rank(rank).shuffle(true), 2);
    std::vector<int64_t> seen;
    for (const auto& batch : pass(mine)) {
      EXPECT_LE(batch.size(), 4u);
      seen.insert(seen.end(), batch.begin(), batch.end());
    }
    EXPECT_EQ(seen, expected) << "rank " << rank;
    EXPECT_EQ(mine.num_batches(), 2);  // 8 samples (22 padded to 24) in batches of 4
    all.insert(seen.begin(), seen.end());
  }
  EXPECT_EQ(all.size(), 22u);
  // Evaluation keeps the loader's order (no shuffle): rank 1 of 2 gets samples 1, 3, 5, ...
  const auto val = pass(shard_for_rank(loader, 2, 1, /*training=*/false));
  EXPECT_EQ(val[0], (std::vector<int64_t>{1, 3, 5, 7}));
}

TEST(ShardForRank, ALoaderShardedAlreadyIsNeverShardedAgain) {
  // A volt shard, and a torch::data loader over a volt::DistributedSampler: used as they are.
  const DataLoader whole(numbered(12), DataLoaderOptions().batch_size(3));
  const BatchSource shard = whole.shard(2, 1);
  EXPECT_EQ(shard.shard_replicas(), 2);
  EXPECT_EQ(pass(shard_for_rank(shard, 2, 1, true)), pass(shard));
  EXPECT_THROW(shard_for_rank(shard, 4, 1, true), Error);  // a shard of another world size
  EXPECT_THROW(whole.shard(2, 1).shard(2, 0), Error);

  auto torch_loader = torch::data::make_data_loader(
      Numbers(), DistributedSampler(12, DistributedSamplerOptions().num_replicas(2).rank(0).shuffle(false)),
      torch::data::DataLoaderOptions(2));
  const BatchSource sampled(torch_loader, 3);
  EXPECT_EQ(sampled.shard_replicas(), -1);
  int batches = 0;
  shard_for_rank(sampled, 2, 0, true).for_each([&](Batch&&) { return ++batches, true; });
  EXPECT_EQ(batches, 3);  // all of this rank's 6 samples, not half of them
}

TEST(ShardForRank, AnyOtherIterableIsSplitByBatches) {
  std::vector<Batch> batches;
  for (int i = 0; i < 4; ++i) batches.emplace_back(at::full({1}, i), at::full({1}, i, at::kLong));
  EXPECT_EQ(pass(shard_for_rank(batches, 2, 1, true)), (std::vector<std::vector<int64_t>>{{1}, {3}}));
}

}  // namespace volt::testing

#include "volt/data/data_loader.h"

#include <ATen/ATen.h>

#include <atomic>

#include "volt/data/distributed_sampler.h"
#include "volt/error.h"

namespace volt {

TensorDataset::TensorDataset(at::Tensor data, at::Tensor target)
    : data_(std::move(data)), target_(std::move(target)) {
  VOLT_CHECK(data_.defined() && data_.dim() >= 1,
             "TensorDataset needs a data tensor with a sample dimension");
  VOLT_CHECK(!target_.defined() || (target_.dim() >= 1 && target_.size(0) == data_.size(0)),
             "TensorDataset: ", data_.size(0), " samples of data but ",
             target_.defined() ? target_.size(0) : 0, " targets");
}

Batch TensorDataset::get_batch(const std::vector<int64_t>& indices) const {
  const at::Tensor index = at::tensor(indices, at::kLong);
  return Batch(data_.index_select(0, index),
               target_.defined() ? target_.index_select(0, index) : at::Tensor());
}

DataLoader::DataLoader(std::shared_ptr<const Dataset> dataset, DataLoaderOptions options)
    : dataset_(std::move(dataset)), options_(options) {
  VOLT_CHECK(dataset_ != nullptr, "DataLoader needs a dataset");
  VOLT_CHECK(options_.batch_size() >= 1, "DataLoader batch_size must be at least 1, not ",
             options_.batch_size());
}

DataLoader DataLoader::shard(int64_t num_replicas, int64_t rank, c10::optional<bool> shuffle) const {
  VOLT_CHECK(!is_shard(), "this DataLoader is one rank's shard of ", num_replicas_,
             " already: shard the whole loader, never a shard again");
  VOLT_CHECK(num_replicas >= 1 && rank >= 0 && rank < num_replicas, "DataLoader shard: rank ", rank, " of ",
             num_replicas);
  DataLoader out = *this;
  out.num_replicas_ = num_replicas;
  out.rank_ = rank;
  if (shuffle) out.options_.shuffle(*shuffle);
  return out;
}

std::vector<int64_t> DataLoader::indices(int64_t epoch) const {
  // num_replicas 1 is the whole dataset in one order: what a RandomSampler / SequentialSampler yields.
  return distributed_indices(dataset_->size(),
                             DistributedSamplerOptions()
                                 .num_replicas(num_replicas_)
                                 .rank(rank_)
                                 .shuffle(options_.shuffle())
                                 .seed(options_.seed()),
                             epoch);
}

int64_t DataLoader::size() const {
  const int64_t samples = static_cast<int64_t>(indices(0).size()), b = options_.batch_size();
  return options_.drop_last() ? samples / b : (samples + b - 1) / b;
}

void DataLoader::for_each(int64_t epoch, const BatchSource::Visitor& visit) const {
  const auto order = indices(epoch);
  const size_t b = static_cast<size_t>(options_.batch_size());
  for (size_t begin = 0; begin < order.size(); begin += b) {
    const size_t end = std::min(order.size(), begin + b);
    if (end - begin < b && options_.drop_last()) return;
    if (!visit(dataset_->get_batch({order.begin() + static_cast<std::ptrdiff_t>(begin),
                                    order.begin() + static_cast<std::ptrdiff_t>(end)})))
      return;
  }
}

BatchSource DataLoader::batch_source(std::function<int64_t()> epoch) const {
  auto loader = std::make_shared<DataLoader>(*this);
  auto passes = std::make_shared<std::atomic<int64_t>>(0);
  BatchSource source = BatchSource::from_visitor(
      [loader, epoch, passes](const BatchSource::Visitor& visit) {
        const int64_t e = epoch ? epoch() : passes->fetch_add(1);
        loader->for_each(e, visit);
      },
      size());
  if (is_shard()) return source.already_sharded(num_replicas_);
  // Lightning's Trainer: the same loader over a DistributedSampler of the same dataset, shuffled for
  // training whatever this loader's own order (its _process_dataloader).
  return source.resharder(
      [loader](int64_t num_replicas, int64_t rank, bool training, std::function<int64_t()> epoch) {
        const c10::optional<bool> shuffle = training ? c10::optional<bool>(true) : c10::nullopt;
        return loader->shard(num_replicas, rank, shuffle).batch_source(std::move(epoch));
      });
}

}  // namespace volt

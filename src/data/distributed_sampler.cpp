#include "volt/data/distributed_sampler.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/serialize/archive.h>

#include <map>

#include "volt/error.h"

namespace volt {

std::vector<int64_t> distributed_indices(int64_t size, const DistributedSamplerOptions& options,
                                         int64_t epoch) {
  const int64_t n = options.num_replicas(), rank = options.rank();
  VOLT_CHECK(n >= 1 && rank >= 0 && rank < n, "DistributedSampler: rank ", rank, " of ", n,
             " replicas: rank must lie in [0, num_replicas)");
  VOLT_CHECK(size >= 0, "DistributedSampler: negative dataset size ", size);
  const int64_t num_samples =
      options.drop_last() && size % n != 0 ? (size - n + n - 1) / n : (size + n - 1) / n;  // ceil, as PyTorch
  const int64_t total = num_samples * n;
  std::vector<int64_t> indices(static_cast<size_t>(size));
  if (options.shuffle()) {
    auto generator = at::detail::createCPUGenerator(options.seed() + static_cast<uint64_t>(epoch));
    const auto perm = at::randperm(size, generator, at::TensorOptions().dtype(at::kLong));
    const int64_t* p = perm.data_ptr<int64_t>();
    std::copy(p, p + size, indices.begin());
  } else {
    for (int64_t i = 0; i < size; ++i) indices[static_cast<size_t>(i)] = i;
  }
  if (!options.drop_last()) {
    for (int64_t i = 0; static_cast<int64_t>(indices.size()) < total && size > 0; ++i)
      indices.push_back(indices[static_cast<size_t>(i % size)]);  // pads with the first indices, repeated
  } else {
    indices.resize(static_cast<size_t>(total));
  }
  std::vector<int64_t> mine;
  for (int64_t i = rank; i < total; i += n) mine.push_back(indices[static_cast<size_t>(i)]);
  return mine;
}

DistributedSampler::DistributedSampler(size_t size, DistributedSamplerOptions options)
    : size_(size), options_(std::move(options)) {
  indices_ = distributed_indices(static_cast<int64_t>(size_), options_, epoch_);
}

void DistributedSampler::set_epoch(int64_t epoch) {
  epoch_ = epoch;
  started_ = false;
  indices_ = distributed_indices(static_cast<int64_t>(size_), options_, epoch_);
  position_ = 0;
}

size_t DistributedSampler::num_samples() const { return indices_.size(); }

void DistributedSampler::reset(c10::optional<size_t> new_size) {
  if (new_size) size_ = *new_size;
  if (started_) ++epoch_;
  started_ = true;
  indices_ = distributed_indices(static_cast<int64_t>(size_), options_, epoch_);
  position_ = 0;
}

c10::optional<std::vector<size_t>> DistributedSampler::next(size_t batch_size) {
  if (position_ >= indices_.size()) return c10::nullopt;
  const size_t end = std::min(indices_.size(), position_ + batch_size);
  std::vector<size_t> out(indices_.begin() + static_cast<std::ptrdiff_t>(position_),
                          indices_.begin() + static_cast<std::ptrdiff_t>(end));
  position_ = end;
  return out;
}

void DistributedSampler::save(torch::serialize::OutputArchive& archive) const {
  archive.write("epoch", at::tensor(epoch_), /*is_buffer=*/true);
  archive.write("position", at::tensor(static_cast<int64_t>(position_)), /*is_buffer=*/true);
}

void DistributedSampler::load(torch::serialize::InputArchive& archive) {
  at::Tensor epoch = at::empty({}, at::kLong), position = at::empty({}, at::kLong);
  archive.read("epoch", epoch, /*is_buffer=*/true);
  archive.read("position", position, /*is_buffer=*/true);
  set_epoch(epoch.item<int64_t>());
  started_ = true;
  position_ = static_cast<size_t>(position.item<int64_t>());
}

BatchSource distributed_batches(const BatchSource& source, DistributedSamplerOptions options,
                                std::function<int64_t()> epoch) {
  VOLT_CHECK(
      source.num_batches().has_value(),
      "a distributed run shards the loader's batches across ranks and needs its length: pass it as "
      "volt::BatchSource(loader, num_batches), or shard it yourself and set use_distributed_sampler(false)");
  const int64_t total = *source.num_batches();
  const int64_t per_rank = static_cast<int64_t>(distributed_indices(total, options, 0).size());
  struct Pass {
    BatchSource source;
    DistributedSamplerOptions options;
    std::function<int64_t()> epoch;
    int64_t total;
  };
  auto pass = std::make_shared<Pass>(Pass{source, options, std::move(epoch), total});
  return BatchSource::from_visitor(
      [pass](const BatchSource::Visitor& visit) {
        const int64_t e = pass->epoch ? pass->epoch() : 0;
        const auto& o = pass->options;
        // The epoch's order of all batches, then this rank's positions in it, as PyTorch's sampler takes
        // them.
        const auto order =
            distributed_indices(pass->total, DistributedSamplerOptions(o).num_replicas(1).rank(0), e);
        const int64_t per_rank = static_cast<int64_t>(distributed_indices(pass->total, o, e).size());
        std::map<int64_t, int64_t> mine;  // batch -> visits in this pass
        std::vector<int64_t> padding;     // batches visited again at the end (padding), in order
        for (int64_t k = 0, position = o.rank(); k < per_rank; ++k, position += o.num_replicas()) {
          if (position < pass->total)
            ++mine[order[static_cast<size_t>(position)]];
          else
            padding.push_back(order[static_cast<size_t>((position - pass->total) % pass->total)]);
        }
        std::map<int64_t, Batch> kept;  // batches the padding needs again
        for (int64_t b : padding) kept[b];
        bool stopped = false;
        int64_t i = 0;
        pass->source.for_each([&](Batch&& batch) {
          const int64_t index = i++;
          if (kept.count(index)) kept[index] = batch;
          auto it = mine.find(index);
          if (it != mine.end() && !visit(std::move(batch))) {
            stopped = true;
            return false;
          }
          return i < pass->total;
        });
        for (int64_t b : padding)
          if (stopped || !visit(Batch(kept[b]))) return;
      },
      per_rank);
}

BatchSource shard_for_rank(const BatchSource& source, int64_t num_replicas, int64_t rank, bool training,
                           std::function<int64_t()> epoch) {
  if (!source || num_replicas == 1) return source;
  if (const auto replicas = source.shard_replicas()) {
    VOLT_CHECK(*replicas == -1 || *replicas == num_replicas, "the loader is one rank's shard of ", *replicas,
               " but the run has ", num_replicas, " ranks: shard it for this world size, or pass the whole ",
               "loader and let the Trainer shard it");
    return source;  // sharded by its sampler already: never twice
  }
  if (source.resharder()) return source.resharder()(num_replicas, rank, training, std::move(epoch));
  return distributed_batches(source,
                             DistributedSamplerOptions().num_replicas(num_replicas).rank(rank).shuffle(false),
                             std::move(epoch));
}

}  // namespace volt

// Distributed data parallel (Lightning's DDPStrategy): one process per device, each with a full replica;
// rank 0's parameters and buffers are broadcast at setup, gradients are averaged by bucketed all-reduces
// that overlap backward, and global rank zero writes checkpoints. Processes are launched as Lightning's
// subprocess launcher does, or by torchrun / SLURM (volt::ClusterEnvironment).
#pragma once

#include <memory>

#include "volt/strategies/parallel_strategy.h"

namespace volt {

class StrategyRegistry;
namespace detail {
class GradientBuckets;
}

class DDPStrategy : public ParallelStrategy {
 public:
  explicit DDPStrategy(const StrategyOptions& options = {});
  ~DDPStrategy() override;

  std::string name() const override { return "ddp"; }
  void setup(Module& model) override;
  void teardown() override;
  void pre_training_step(Module& model) override;
  void backward(const at::Tensor& loss, bool sync_gradients) override;

  /// Parameters per gradient bucket, in launch order (after setup with a trainable model).
  std::vector<size_t> bucket_sizes() const;

  /// "ddp"; "ddp_spawn", "ddp_fork" and "ddp_notebook" are refused with the reason.
  static void register_strategies(StrategyRegistry& registry);

 private:
  std::unique_ptr<detail::GradientBuckets> buckets_;
  const Module* bucketed_model_ = nullptr;
  std::vector<at::Tensor> buffers_;
};

}  // namespace volt

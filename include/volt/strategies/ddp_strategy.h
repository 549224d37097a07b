// Distributed data parallel (Lightning's DDPStrategy): one process per device, each with a full replica;
// rank 0's parameters and buffers are broadcast at setup, gradients are averaged by bucketed all-reduces
// that overlap backward, and global rank zero writes checkpoints. Processes are launched as Lightning's
// subprocess launcher does, or by torchrun / SLURM (volt::ClusterEnvironment).
#pragma once

#include <memory>

#include "volt/distributed/cluster_environment.h"
#include "volt/strategies/strategy.h"

namespace volt {

namespace detail {
class GradientBuckets;
}

class DDPStrategy : public Strategy {
 public:
  DDPStrategy(Accelerator accelerator, PrecisionPlugin precision, const StrategyOptions& options);
  ~DDPStrategy() override;

  std::string name() const override { return "ddp"; }
  void setup_environment() override;
  int64_t global_rank() const override { return env_.global_rank; }
  int64_t local_rank() const override { return env_.local_rank; }
  int64_t node_rank() const override { return env_.node_rank; }
  int64_t world_size() const override { return env_.world_size; }
  const ClusterEnvironment& cluster_environment() const { return env_; }
  /// The process group (after setup_environment).
  const std::shared_ptr<ProcessGroup>& process_group() const { return group_; }

  void setup(Module& model) override;
  void teardown() override;
  void pre_training_step(Module& model) override;
  void backward(const at::Tensor& loss, bool sync_gradients) override;

  at::Tensor reduce(const at::Tensor& tensor, ReduceOp op = ReduceOp::kMean) override;
  std::vector<at::Tensor> all_gather(const at::Tensor& tensor) override;
  void broadcast(at::Tensor& tensor, int64_t src = 0) override;
  void barrier(const std::string& name = "") override;

  /// Parameters per gradient bucket, in launch order (after setup with a trainable model).
  std::vector<size_t> bucket_sizes() const;

 private:
  void broadcast_tensors(const std::vector<at::Tensor>& tensors);

  StrategyOptions options_;
  ClusterEnvironment env_;
  std::shared_ptr<ProcessGroup> group_;
  std::unique_ptr<detail::GradientBuckets> buckets_;
  const Module* bucketed_model_ = nullptr;
  std::vector<at::Tensor> buffers_;
};

}  // namespace volt

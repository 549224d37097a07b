// What every multi-process strategy shares (Lightning's ParallelStrategy): the cluster environment, the
// launch of the other local ranks, the c10d process group and the collectives the loops call. DDP, FSDP
// and the ZeRO stages differ only in where parameters, gradients and optimizer state live. Every tensor
// these collectives hand to the process group is on the group's device (CUDA for NCCL), whatever device
// the caller's tensor is on; results come back on the caller's device.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "volt/distributed/cluster_environment.h"
#include "volt/strategies/strategy.h"

namespace volt {

class ParallelStrategy : public Strategy {
 public:
  explicit ParallelStrategy(const StrategyOptions& options);

  /// Launches the other local ranks (unless torchrun or SLURM did), joins the process group and gives
  /// every rank rank 0's default CPU generator.
  void setup_environment() override;
  int64_t global_rank() const override { return env_.global_rank; }
  int64_t local_rank() const override { return env_.local_rank; }
  int64_t node_rank() const override { return env_.node_rank; }
  int64_t world_size() const override { return env_.world_size; }
  const ClusterEnvironment& cluster_environment() const { return env_; }
  /// The process group (after setup_environment).
  const std::shared_ptr<ProcessGroup>& process_group() const { return group_; }

  using Strategy::reduce;
  at::Tensor reduce(const at::Tensor& tensor, ReduceOp op = ReduceOp::kMean) override;
  std::vector<at::Tensor> all_gather(const at::Tensor& tensor) override;
  void broadcast(at::Tensor& tensor, int64_t src = 0) override;
  std::string broadcast(const std::string& text, int64_t src = 0) override;
  void barrier(const std::string& name = "") override;

 protected:
  /// The group setup_environment joins: Gloo on the CPU, NCCL on CUDA, over every rank. A subclass may
  /// wrap or replace it (volt's tests wrap it in a group that checks the device of every tensor).
  virtual std::shared_ptr<ProcessGroup> connect_process_group();
  /// Rank 0's values in `tensors`, one broadcast per dtype and device (PyTorch's _broadcast_coalesced).
  void broadcast_tensors(const std::vector<at::Tensor>& tensors);
  /// Throws unless setup_environment() ran.
  void check_environment(const char* caller) const;
  /// Throws for a precision with loss scaling ("16-mixed"): the sharded strategies would take the scaler's
  /// skip decision per shard.
  void refuse_loss_scaling() const;

  ClusterEnvironment env_;
  std::shared_ptr<ProcessGroup> group_;
};

}  // namespace volt

// A process group on LibTorch's c10d: rendezvous through a TCPStore hosted by global rank 0, collectives
// through ProcessGroupGloo on the CPU and ProcessGroupNCCL on CUDA. Every wait is bounded by the timeout:
// a rank that never arrives or dies becomes a volt::Error naming it, never a hang. Subgroups
// (`new_group`, volt::DeviceMesh) carry the same guarantees; composed parallelisms (hybrid sharding,
// tensor or pipeline parallelism) are built on them. Every tensor a collective is handed must live on the
// group's device(): CUDA for NCCL, the CPU for Gloo.
//
//   auto group = volt::ProcessGroup::create(env, c10::kCPU, std::chrono::seconds(60));
//   group->all_reduce(grad, volt::ReduceOp::kSum);
//   auto pair = group->new_group({0, 1});  // on every rank; null on ranks 2, 3, ...
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/DeviceType.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "volt/distributed/cluster_environment.h"

namespace volt {

enum class ReduceOp { kSum, kMean, kMax, kMin };

/// An asynchronous collective in flight (a c10d Work). wait() rethrows its failure as volt::Error.
class CollectiveWork {
 public:
  virtual ~CollectiveWork() = default;
  virtual void wait() = 0;
};

class ProcessGroup {
 public:
  virtual ~ProcessGroup() = default;

  /// Rendezvous of `env.world_size` processes at env.master_addr:env.master_port (global rank 0 hosts the
  /// store, or torchrun's agent when it says it does) and a Gloo (kCPU) or NCCL (kCUDA) group over them.
  /// Every rank must create its groups in the same order (each gets the next key prefix of one shared
  /// store). A rank missing after `timeout` is named in the volt::Error every other rank throws; the same
  /// timeout bounds each collective. NCCL uses device env.local_rank.
  static std::shared_ptr<ProcessGroup> create(const ClusterEnvironment& env, c10::DeviceType device,
                                              std::chrono::milliseconds timeout);

  virtual int64_t rank() const = 0;
  virtual int64_t size() const = 0;
  /// "gloo" or "nccl".
  virtual std::string backend() const = 0;
  /// Where the tensors handed to this group's collectives must live (cuda:<local rank> for NCCL, cpu for
  /// Gloo); a tensor elsewhere is a volt::Error naming the collective and both devices.
  virtual c10::Device device() const = 0;
  /// torch.distributed.new_group: a group of `ranks` (ranks of this group, in the order that numbers the
  /// new group's ranks). Collective over this group: every rank calls it, with the same ranks, in the same
  /// order as its other new_group calls; the members get the new group, the others nullptr. The members'
  /// rendezvous is bounded by this group's timeout and names a missing member by its global rank.
  virtual std::shared_ptr<ProcessGroup> new_group(const std::vector<int64_t>& ranks) = 0;
  /// The global (world) rank of this group's rank `rank`.
  virtual int64_t global_rank(int64_t rank) const = 0;

  /// In place on every rank. kMean and dtypes the backend cannot reduce (bfloat16 and float16 on Gloo)
  /// are handled here (sum in float32, then divide and cast back).
  virtual void all_reduce(at::Tensor& tensor, ReduceOp op = ReduceOp::kSum) = 0;
  /// Starts an all-reduce and returns at once; the tensor holds the result after wait().
  virtual std::unique_ptr<CollectiveWork> all_reduce_async(at::Tensor& tensor,
                                                           ReduceOp op = ReduceOp::kSum) = 0;
  /// `tensor` (same shape and dtype on every rank) takes rank `src`'s values.
  virtual void broadcast(at::Tensor& tensor, int64_t src = 0) = 0;
  /// Every rank's `tensor` (same shape on every rank), in rank order.
  virtual std::vector<at::Tensor> all_gather(const at::Tensor& tensor) = 0;
  /// `input` is split into size() equal chunks along dim 0; this rank gets the reduction of chunk rank().
  /// (Gloo in LibTorch 1.13 has no reduce_scatter: all-reduce, then slice.)
  virtual at::Tensor reduce_scatter(const at::Tensor& input, ReduceOp op = ReduceOp::kSum) = 0;
  virtual void barrier() = 0;
};

}  // namespace volt

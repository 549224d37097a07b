// DDP's gradient synchronisation with the semantics of c10d's Reducer (which does not compile against
// Debian's LibTorch 1.13 headers): parameters are grouped into buckets in reverse registration order
// (roughly the order backward produces their gradients), the first bucket small (1 MiB) so that
// communication starts early, the others up to the cap (25 MiB); a post-hook on each parameter's
// gradient accumulator marks it ready, and a bucket's all-reduce is launched as soon as its last gradient
// is ready — in bucket order on every rank — so communication overlaps the rest of backward.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "grad_ready_hooks.h"
#include "volt/distributed/process_group.h"

namespace volt::detail {

class GradientBuckets {
 public:
  GradientBuckets(std::vector<at::Tensor> params, std::shared_ptr<ProcessGroup> group,
                  int64_t bucket_cap_bytes, int64_t first_bucket_bytes = 1024 * 1024);
  ~GradientBuckets();
  GradientBuckets(const GradientBuckets&) = delete;
  GradientBuckets& operator=(const GradientBuckets&) = delete;

  /// Before backward: whether this backward ends in a gradient sync (false while accumulating).
  void prepare_for_backward(bool sync);
  /// After backward: launches the buckets no hook completed (parameters unused this step count as zero
  /// gradients), waits for every all-reduce and writes the averaged gradients back.
  void finalize();

  /// Bucket sizes in parameters, in launch order (for tests and logs).
  std::vector<size_t> bucket_sizes() const;

 private:
  struct Bucket {
    std::vector<size_t> params;  // indices into params_
    int64_t numel = 0;
    size_t pending = 0;
    at::Tensor flat;
    std::unique_ptr<CollectiveWork> work;
  };
  void mark_ready(size_t param);
  void launch_ready_buckets();
  void launch(Bucket& bucket);

  std::vector<at::Tensor> params_;
  std::shared_ptr<ProcessGroup> group_;
  std::vector<Bucket> buckets_;
  std::vector<size_t> bucket_of_;  // param index -> bucket index
  std::vector<bool> ready_;
  size_t next_bucket_ = 0;
  bool sync_ = false;
  std::unique_ptr<GradReadyHooks> hooks_;  // last: its hooks leave first
};

}  // namespace volt::detail

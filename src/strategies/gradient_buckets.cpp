#include "gradient_buckets.h"

#include <torch/torch.h>

#include "volt/error.h"

namespace volt::detail {

GradientBuckets::GradientBuckets(std::vector<at::Tensor> params, std::shared_ptr<ProcessGroup> group,
                                 int64_t bucket_cap_bytes, int64_t first_bucket_bytes)
    : params_(std::move(params)), group_(std::move(group)) {
  // PyTorch's compute_bucket_assignment_by_size: reverse order, one open bucket per dtype and device, the
  // first bucket's limit small and the rest at the cap.
  bucket_of_.assign(params_.size(), 0);
  struct Open {
    c10::ScalarType dtype;
    c10::Device device;
    size_t bucket;
    int64_t bytes;
    bool first;
  };
  std::vector<Open> open;
  for (size_t k = params_.size(); k-- > 0;) {
    const auto& p = params_[k];
    auto it = std::find_if(open.begin(), open.end(), [&](const Open& o) {
      return o.dtype == p.scalar_type() && o.device == p.device();
    });
    if (it == open.end()) {
      buckets_.emplace_back();
      open.push_back({p.scalar_type(), p.device(), buckets_.size() - 1, 0, true});
      it = open.end() - 1;
    }
    Bucket& b = buckets_[it->bucket];
    b.params.push_back(k);
    b.numel += p.numel();
    bucket_of_[k] = it->bucket;
    it->bytes += p.numel() * static_cast<int64_t>(p.element_size());
    if (it->bytes >= (it->first ? first_bucket_bytes : bucket_cap_bytes))
      open.erase(it);  // full: next opens anew
  }
  ready_.assign(params_.size(), false);
  hooks_ = std::make_unique<GradReadyHooks>(
      params_, [this](size_t k) { mark_ready(k); }, "DDP");
}

GradientBuckets::~GradientBuckets() = default;

std::vector<size_t> GradientBuckets::bucket_sizes() const {
  std::vector<size_t> out;
  for (const auto& b : buckets_) out.push_back(b.params.size());
  return out;
}

void GradientBuckets::prepare_for_backward(bool sync) {
  sync_ = sync;
  next_bucket_ = 0;
  std::fill(ready_.begin(), ready_.end(), false);
  for (auto& b : buckets_) {
    b.pending = b.params.size();
    b.work.reset();
    b.flat = at::Tensor();
  }
}

void GradientBuckets::mark_ready(size_t param) {
  if (!sync_ || ready_[param]) return;
  ready_[param] = true;
  Bucket& b = buckets_[bucket_of_[param]];
  if (--b.pending == 0) launch_ready_buckets();
}

void GradientBuckets::launch_ready_buckets() {
  // Every rank issues its all-reduces in the same (bucket) order, whatever order the hooks fire in.
  while (next_bucket_ < buckets_.size() && buckets_[next_bucket_].pending == 0)
    launch(buckets_[next_bucket_++]);
}

void GradientBuckets::launch(Bucket& bucket) {
  torch::NoGradGuard no_grad;
  std::vector<at::Tensor> pieces;
  pieces.reserve(bucket.params.size());
  const double divisor = static_cast<double>(group_->size());
  for (size_t k : bucket.params) {
    const auto& p = params_[k];
    const auto& g = p.grad();
    pieces.push_back(g.defined() ? g.reshape({-1}) : at::zeros({p.numel()}, p.options()));
  }
  // Divided before the sum, as the Reducer does, so that large gradients do not overflow low precisions.
  bucket.flat = at::cat(pieces).div_(divisor);
  bucket.work = group_->all_reduce_async(bucket.flat, ReduceOp::kSum);
}

void GradientBuckets::finalize() {
  if (!sync_) return;
  for (auto& b : buckets_) b.pending = 0;  // parameters no hook reported: their gradient counts as zero
  launch_ready_buckets();
  torch::NoGradGuard no_grad;
  for (auto& b : buckets_) {
    b.work->wait();
    int64_t offset = 0;
    for (size_t k : b.params) {
      auto& p = params_[k];
      const int64_t n = p.numel();
      auto slice = b.flat.narrow(0, offset, n).view(p.sizes());
      offset += n;
      if (p.grad().defined())
        p.mutable_grad().copy_(slice);
      else if (slice.ne(0).any().item<bool>())  // used on another rank; unused everywhere: stays undefined
        p.mutable_grad() = slice.clone();
    }
    b.work.reset();
    b.flat = at::Tensor();
  }
  sync_ = false;
}

}  // namespace volt::detail

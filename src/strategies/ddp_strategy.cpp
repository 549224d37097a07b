#include "volt/strategies/ddp_strategy.h"

#include <torch/torch.h>

#include "gradient_buckets.h"
#include "volt/core/parameters.h"
#include "volt/error.h"

namespace volt {

DDPStrategy::DDPStrategy(Accelerator accelerator, PrecisionPlugin precision, const StrategyOptions& options)
    : ParallelStrategy(std::move(accelerator), std::move(precision), options) {}

DDPStrategy::~DDPStrategy() = default;

void DDPStrategy::setup(Module& model) {
  check_environment("setup");
  Strategy::setup(model);
  // Rank 0's weights everywhere, so that init_module() (or a load) on every rank is fine.
  std::vector<at::Tensor> state = unique_parameters(model);
  buffers_ = unique_buffers(model);
  state.insert(state.end(), buffers_.begin(), buffers_.end());
  broadcast_tensors(state);
  if (bucketed_model_ != &model || !buckets_) {
    auto params = trainable_parameters(model);
    buckets_ = params.empty() ? nullptr
                              : std::make_unique<detail::GradientBuckets>(std::move(params), group_,
                                                                          options_.bucket_cap_bytes());
    bucketed_model_ = &model;
  }
}

void DDPStrategy::teardown() {}

void DDPStrategy::pre_training_step(Module& /*model*/) {
  if (options_.broadcast_buffers() && !buffers_.empty()) broadcast_tensors(buffers_);
}

void DDPStrategy::backward(const at::Tensor& loss, bool sync_gradients) {
  VOLT_CHECK(buckets_ != nullptr, "DDP: the model has no trainable parameters to synchronise");
  buckets_->prepare_for_backward(sync_gradients);
  precision_.backward(loss);
  buckets_->finalize();
}

std::vector<size_t> DDPStrategy::bucket_sizes() const {
  return buckets_ ? buckets_->bucket_sizes() : std::vector<size_t>{};
}

}  // namespace volt

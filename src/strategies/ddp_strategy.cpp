#include "volt/strategies/ddp_strategy.h"

#include <torch/torch.h>

#include "gradient_buckets.h"
#include "volt/core/parameters.h"
#include "volt/error.h"
#include "volt/strategies/strategy_registry.h"

namespace volt {

DDPStrategy::DDPStrategy(const StrategyOptions& options) : ParallelStrategy(options) {}

void DDPStrategy::register_strategies(StrategyRegistry& registry) {
  registry.add(
      "ddp", [](const StrategyOptions& options) { return std::make_shared<DDPStrategy>(options); },
      "distributed data parallel: a replica per process, gradients all-reduced in buckets");
  for (const char* name : {"ddp_spawn", "ddp_fork", "ddp_notebook"})
    registry.refuse(name,
                    "spawning or forking ranks from inside a running C++ program cannot carry its state "
                    "(modules, loaders, closures) into them as Python pickles it; use \"ddp\", which re-runs "
                    "this program once per rank, as Lightning's default launcher does");
}

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

void DDPStrategy::teardown() {
  // The bucket hooks leave the parameters' gradient accumulators: a backward after the run (or under
  // another strategy) must not start all-reduces.
  buckets_.reset();
  bucketed_model_ = nullptr;
  buffers_.clear();
}

void DDPStrategy::pre_training_step(Module& /*model*/) {
  if (options_.broadcast_buffers() && !buffers_.empty()) broadcast_tensors(buffers_);
}

void DDPStrategy::backward(const at::Tensor& loss, bool sync_gradients) {
  VOLT_CHECK(buckets_ != nullptr, "DDP: the model has no trainable parameters to synchronise");
  buckets_->prepare_for_backward(sync_gradients);
  precision_->backward(loss);
  buckets_->finalize();
}

std::vector<size_t> DDPStrategy::bucket_sizes() const {
  return buckets_ ? buckets_->bucket_sizes() : std::vector<size_t>{};
}

}  // namespace volt

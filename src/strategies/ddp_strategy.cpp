#include "volt/strategies/ddp_strategy.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <map>
#include <mutex>

#include "gradient_buckets.h"
#include "volt/core/parameters.h"
#include "volt/distributed/launcher.h"
#include "volt/error.h"

namespace volt {

DDPStrategy::DDPStrategy(Accelerator accelerator, PrecisionPlugin precision, const StrategyOptions& options)
    : Strategy(std::move(accelerator), std::move(precision), options.init_rng()),
      options_(options),
      env_(ClusterEnvironment::detect(static_cast<int64_t>(accelerator_.devices().size()),
                                      options.num_nodes())) {}

DDPStrategy::~DDPStrategy() = default;

void DDPStrategy::setup_environment() {
  if (group_) return;
  if (!env_.launched_externally() && env_.world_size > 1) env_ = SubprocessLauncher::launch(env_);
  group_ = ProcessGroup::create(env_, accelerator_.device_type(), options_.timeout());
  // The same default generator on every rank: loaders that shuffle from it (RandomSampler) then visit the
  // same order everywhere, so that the per-rank shards are disjoint, and init_module draws the same seed.
  at::Tensor state = at::detail::getDefaultCPUGenerator().get_state();
  broadcast(state, 0);
  at::Generator generator = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(generator.mutex());
  generator.set_state(state);
}

void DDPStrategy::broadcast_tensors(const std::vector<at::Tensor>& tensors) {
  // One broadcast per dtype and device of the tensors flattened together (PyTorch's _broadcast_coalesced).
  torch::NoGradGuard no_grad;
  std::map<std::pair<c10::ScalarType, std::string>, std::vector<at::Tensor>> groups;
  for (const auto& t : tensors) groups[{t.scalar_type(), t.device().str()}].push_back(t);
  for (auto& [key, group] : groups) {
    std::vector<at::Tensor> flat;
    for (const auto& t : group) flat.push_back(t.reshape({-1}));
    at::Tensor buffer = at::cat(flat);
    group_->broadcast(buffer, 0);
    int64_t offset = 0;
    for (auto& t : group) {
      t.copy_(buffer.narrow(0, offset, t.numel()).view(t.sizes()));
      offset += t.numel();
    }
  }
}

void DDPStrategy::setup(Module& model) {
  VOLT_CHECK(group_ != nullptr, "DDPStrategy::setup before setup_environment(): the Trainer calls it first");
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

at::Tensor DDPStrategy::reduce(const at::Tensor& tensor, ReduceOp op) {
  at::Tensor out = tensor.detach().clone();
  group_->all_reduce(out, op);
  return out;
}

std::vector<at::Tensor> DDPStrategy::all_gather(const at::Tensor& tensor) {
  return group_->all_gather(tensor.detach().contiguous());
}

void DDPStrategy::broadcast(at::Tensor& tensor, int64_t src) { group_->broadcast(tensor, src); }

void DDPStrategy::barrier(const std::string& /*name*/) {
  if (group_) group_->barrier();
}

}  // namespace volt

#include "volt/strategies/parallel_strategy.h"

#include <torch/torch.h>

#include <map>
#include <mutex>

#include "../core/rng_state.h"
#include "volt/distributed/launcher.h"
#include "volt/error.h"

namespace volt {

ParallelStrategy::ParallelStrategy(Accelerator accelerator, PrecisionPlugin precision,
                                   const StrategyOptions& options)
    : Strategy(std::move(accelerator), std::move(precision), options.init_rng()),
      options_(options),
      env_(ClusterEnvironment::detect(static_cast<int64_t>(accelerator_.devices().size()),
                                      options.num_nodes())) {}

void ParallelStrategy::setup_environment() {
  if (group_) return;
  if (!env_.launched_externally() && env_.world_size > 1) env_ = SubprocessLauncher::launch(env_);
  group_ = ProcessGroup::create(env_, accelerator_.device_type(), options_.timeout());
  // The same default generator on every rank: loaders that shuffle from it (RandomSampler) then visit the
  // same order everywhere, so that the per-rank shards are disjoint, and init scopes draw the same seed.
  at::Tensor state = detail::cpu_rng_state();
  broadcast(state, 0);
  detail::set_cpu_rng_state(state);
}

void ParallelStrategy::check_environment(const char* caller) const {
  VOLT_CHECK(group_ != nullptr, name(), "Strategy::", caller,
             " before setup_environment(): the Trainer calls it first; without a Trainer, call it yourself");
}

void ParallelStrategy::broadcast_tensors(const std::vector<at::Tensor>& tensors) {
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

at::Tensor ParallelStrategy::reduce(const at::Tensor& tensor, ReduceOp op) {
  at::Tensor out = tensor.detach().clone();
  group_->all_reduce(out, op);
  return out;
}

std::vector<at::Tensor> ParallelStrategy::all_gather(const at::Tensor& tensor) {
  return group_->all_gather(tensor.detach().contiguous());
}

void ParallelStrategy::broadcast(at::Tensor& tensor, int64_t src) { group_->broadcast(tensor, src); }

void ParallelStrategy::barrier(const std::string& /*name*/) {
  if (group_) group_->barrier();
}

}  // namespace volt

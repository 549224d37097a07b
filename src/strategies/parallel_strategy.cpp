#include "volt/strategies/parallel_strategy.h"

#include <torch/torch.h>

#include <map>

#include "../core/rng_state.h"
#include "volt/distributed/byte_collectives.h"
#include "volt/distributed/launcher.h"
#include "volt/error.h"

namespace volt {

ParallelStrategy::ParallelStrategy(const StrategyOptions& options)
    : Strategy(options),
      env_(ClusterEnvironment::detect(static_cast<int64_t>(accelerator_.devices().size()),
                                      options.num_nodes())) {}

std::shared_ptr<ProcessGroup> ParallelStrategy::connect_process_group() {
  return ProcessGroup::create(env_, accelerator_.device_type(), options_.timeout());
}

void ParallelStrategy::setup_environment() {
  if (group_) return;
  if (!env_.launched_externally() && env_.world_size > 1) env_ = SubprocessLauncher::launch(env_);
  group_ = connect_process_group();
  // The same default generator on every rank: loaders that shuffle from it (RandomSampler) then visit the
  // same order everywhere, so that the per-rank shards are disjoint, and init scopes draw the same seed.
  at::Tensor state = detail::cpu_rng_state();
  broadcast(state, 0);
  detail::set_cpu_rng_state(state);
}

void ParallelStrategy::check_environment(const char* caller) const {
  VOLT_CHECK(group_ != nullptr, name(), " strategy: ", caller,
             " before setup_environment(): the Trainer calls it first; without a Trainer, call it yourself");
}

void ParallelStrategy::refuse_loss_scaling() const {
  VOLT_CHECK(
      precision_->scaler() == nullptr, "strategy '", name(), "' with precision 16-mixed is not ",
      "offered yet: the loss scaler's skip decision would be taken per shard; use bf16-mixed or bf16-true");
}

void ParallelStrategy::broadcast_tensors(const std::vector<at::Tensor>& tensors) {
  check_environment("broadcast");
  torch::NoGradGuard no_grad;
  std::map<std::pair<c10::ScalarType, std::string>, std::vector<at::Tensor>> groups;
  for (const auto& t : tensors) groups[{t.scalar_type(), t.device().str()}].push_back(t);
  for (auto& [key, group] : groups) {
    std::vector<at::Tensor> flat;
    for (const auto& t : group) flat.push_back(t.reshape({-1}).to(group_->device()));
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
  check_environment("reduce");
  at::Tensor out = tensor.detach().to(group_->device(), /*non_blocking=*/false, /*copy=*/true);
  group_->all_reduce(out, op);
  return out.to(tensor.device());
}

std::vector<at::Tensor> ParallelStrategy::all_gather(const at::Tensor& tensor) {
  check_environment("all_gather");
  auto gathered = group_->all_gather(tensor.detach().to(group_->device()).contiguous());
  for (auto& t : gathered) t = t.to(tensor.device());
  return gathered;
}

void ParallelStrategy::broadcast(at::Tensor& tensor, int64_t src) {
  check_environment("broadcast");
  if (tensor.device() == group_->device()) return group_->broadcast(tensor, src);
  at::Tensor buffer = tensor.to(group_->device());
  group_->broadcast(buffer, src);
  torch::NoGradGuard no_grad;
  tensor.copy_(buffer);
}

std::string ParallelStrategy::broadcast(const std::string& text, int64_t src) {
  check_environment("broadcast");
  return broadcast_bytes(*group_, text, src);
}

void ParallelStrategy::barrier(const std::string& /*name*/) {
  if (group_) group_->barrier();
}

}  // namespace volt

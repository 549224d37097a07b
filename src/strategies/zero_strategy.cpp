#include "volt/strategies/zero_strategy.h"

#include <torch/torch.h>

#include "sharding/shard_layout.h"
#include "volt/error.h"
#include "volt/optim/optimizer_state.h"
#include "volt/strategies/strategy_registry.h"

namespace volt {

struct ZeroStrategy::Slot {
  at::Tensor param;  // the replica's full parameter
  at::Tensor rows;   // this rank's rows of it (shares its memory): what the optimizer steps
  detail::ShardLayout layout;
};

ZeroStrategy::ZeroStrategy(const StrategyOptions& options)
    : DDPStrategy(options), stage_(options.name() == "deepspeed_stage_1" ? 1 : 2) {
  refuse_loss_scaling();
}

ZeroStrategy::~ZeroStrategy() = default;

void ZeroStrategy::register_strategies(StrategyRegistry& registry) {
  const auto make = [](const StrategyOptions& options) { return std::make_shared<ZeroStrategy>(options); };
  registry.add("deepspeed_stage_1", make, "ZeRO-1: DDP replicas, optimizer state sharded");
  registry.add("deepspeed_stage_2", make, "ZeRO-2: DDP replicas, gradients and optimizer state sharded");
}

void ZeroStrategy::setup_optimizers(torch::optim::Optimizer& optimizer) {
  check_environment("setup_optimizers");
  slots_.clear();
  for (auto& group : optimizer.param_groups())
    for (auto& param : group.params()) {
      Slot slot;
      slot.param = param;
      slot.layout = detail::ShardLayout::of(param.sizes(), global_rank(), world_size());
      VOLT_CHECK(param.is_contiguous(), "ZeRO shards contiguous parameters; this one has strides ",
                 param.strides());
      slot.rows = slot.layout.slice(param.detach());  // a view: stepping it updates the replica
      param = slot.rows;
      slots_.push_back(std::move(slot));
    }
}

std::vector<const detail::ShardLayout*> ZeroStrategy::layouts() const {
  std::vector<const detail::ShardLayout*> out;
  for (const auto& slot : slots_) out.push_back(&slot.layout);
  return out;
}

void ZeroStrategy::backward(const at::Tensor& loss, bool sync_gradients) {
  DDPStrategy::backward(loss, sync_gradients);
  if (!sync_gradients) return;
  torch::NoGradGuard no_grad;
  for (auto& slot : slots_) {
    if (!slot.param.grad().defined()) continue;
    at::Tensor mine = slot.layout.slice(slot.param.grad());
    if (stage_ == 2) {  // only this rank's rows survive backward
      slot.rows.mutable_grad() = mine.clone();
      slot.param.mutable_grad() = at::Tensor();
    } else {
      // The full gradient's memory, kept until the step; an alias, not an autograd view, so that the
      // optimizer's zero_grad() may detach it in place.
      slot.rows.mutable_grad() =
          at::empty({0}, mine.options())
              .set_(mine.storage(), mine.storage_offset(), mine.sizes(), mine.strides());
    }
  }
}

bool ZeroStrategy::optimizer_step(torch::optim::Optimizer& optimizer, const std::function<void()>& clip) {
  const bool stepped = DDPStrategy::optimizer_step(optimizer, clip);
  torch::NoGradGuard no_grad;
  // Each rank's updated rows into every replica (the same order everywhere: optimizer parameter order).
  for (auto& slot : slots_) {
    at::Tensor full = slot.layout.gather(*group_, slot.rows);
    slot.param.copy_(full);
    slot.param.mutable_grad() = at::Tensor();  // the replica's gradient is spent (stage 1)
  }
  return stepped;
}

void ZeroStrategy::clip_gradients(Module& /*model*/, double value, GradClipAlgorithm algorithm) {
  std::vector<at::Tensor> rows;
  for (const auto& slot : slots_) rows.push_back(slot.rows);
  detail::clip_sharded_gradients(rows, group_.get(), value, algorithm);
}

Value ZeroStrategy::optimizer_state_dict(torch::optim::Optimizer& optimizer) {
  return detail::gather_optimizer_state(volt::optimizer_state_dict(optimizer), layouts(), *group_);
}

void ZeroStrategy::load_optimizer_state_dict(torch::optim::Optimizer& optimizer, const Value& state) {
  volt::load_optimizer_state_dict(optimizer, detail::slice_optimizer_state(state, layouts()));
}

}  // namespace volt

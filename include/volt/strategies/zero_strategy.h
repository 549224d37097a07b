// ZeRO stages 1 and 2 (Lightning's "deepspeed_stage_1" / "deepspeed_stage_2", with PyTorch's collectives
// instead of DeepSpeed's): DDP's full replicas and bucketed gradient all-reduce, but each rank keeps the
// optimizer state of, and steps, only its rows of each parameter (dim-0 chunks, as the sharded strategies),
// then the updated rows are all-gathered into every replica. Stage 1 keeps the full averaged gradients
// until the step; stage 2 keeps only this rank's rows of them once backward ends.
#pragma once

#include <vector>

#include "volt/strategies/ddp_strategy.h"

namespace volt {

namespace detail {
struct ShardLayout;
}

class ZeroStrategy : public DDPStrategy {
 public:
  /// Stage 1 for options.name() "deepspeed_stage_1", else stage 2.
  explicit ZeroStrategy(const StrategyOptions& options);
  ~ZeroStrategy() override;

  /// "deepspeed_stage_1" or "deepspeed_stage_2".
  std::string name() const override { return stage_ == 1 ? "deepspeed_stage_1" : "deepspeed_stage_2"; }
  int stage() const { return stage_; }
  /// "deepspeed_stage_1" and "deepspeed_stage_2".
  static void register_strategies(StrategyRegistry& registry);
  void setup_optimizers(torch::optim::Optimizer& optimizer) override;
  void backward(const at::Tensor& loss, bool sync_gradients) override;
  bool optimizer_step(torch::optim::Optimizer& optimizer, const std::function<void()>& clip) override;
  void clip_gradients(Module& model, double value, GradClipAlgorithm algorithm) override;

  /// PyTorch's layout with each state tensor gathered to its parameter's full shape (collective).
  Value optimizer_state_dict(torch::optim::Optimizer& optimizer) override;
  void load_optimizer_state_dict(torch::optim::Optimizer& optimizer, const Value& state) override;

 private:
  struct Slot;
  std::vector<const detail::ShardLayout*> layouts() const;

  int stage_;
  std::vector<Slot> slots_;  // per optimizer parameter
};

}  // namespace volt

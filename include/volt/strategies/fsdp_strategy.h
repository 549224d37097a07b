// Fully sharded data parallel (Lightning's FSDPStrategy and "deepspeed_stage_3"): every rank keeps only
// its rows of each parameter, gradient and optimizer state (PyTorch's FSDP2 layout: dim-0 chunks);
// a unit's full parameters (the auto-wrap policy's modules) are all-gathered when model code first uses
// one of them, in forward and again in backward, and freed when the next unit starts; gradients are
// reduce-scattered as soon as a unit's last one is ready. No hooks in model code: the dispatcher reports
// each op's tensor arguments (DESIGN §5). Layers created in configure_model() are deferred (no memory)
// and each rank materializes only its own rows, bit for bit what a full init_module() would give.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "volt/strategies/parallel_strategy.h"

namespace volt {

class StrategyRegistry;

namespace detail {
class ShardedUnits;
struct ShardLayout;
struct DcpPlacement;
using DcpPlacementOf = std::function<c10::optional<DcpPlacement>(const std::string& name)>;
}  // namespace detail

class FSDPStrategy : public ParallelStrategy {
 public:
  explicit FSDPStrategy(const StrategyOptions& options = {});
  ~FSDPStrategy() override;

  /// "fsdp" or "deepspeed_stage_3", as it was asked for.
  std::string name() const override {
    return options_.name() == "deepspeed_stage_3" ? "deepspeed_stage_3" : "fsdp";
  }
  /// Refused: Trainer::init_module() would build the whole model on every rank.
  InitScope module_init_context(bool empty_init) const override;
  /// Deferred: each rank materializes its shard in setup().
  InitScope configure_model_context() const override;
  void setup(Module& model) override;
  void setup_optimizers(torch::optim::Optimizer& optimizer) override;
  std::unique_ptr<ForwardContext> forward_context() override;
  void backward(const at::Tensor& loss, bool sync_gradients) override;
  void clip_gradients(Module& model, double value, GradClipAlgorithm algorithm) override;

  /// The full state dict (every rank gathers each unit in turn; values on the CPU); with state_dict_type
  /// "sharded", this rank's rows of each parameter.
  Value model_state_dict(Module& model) override;
  /// PyTorch's layout with each state tensor gathered to its parameter's full shape.
  Value optimizer_state_dict(torch::optim::Optimizer& optimizer) override;
  void load_model_state_dict(Module& model, const Value& state) override;
  void load_optimizer_state_dict(torch::optim::Optimizer& optimizer, const Value& state) override;

  /// state_dict_type "sharded": a DCP directory at `path`, each rank writing its rows (collective).
  void save_checkpoint(const Checkpoint& checkpoint, const std::string& path) override;
  /// A DCP directory: this rank's rows of each parameter and optimizer state (any saving world size).
  Checkpoint load_checkpoint(const std::string& path) const override;

  /// "fsdp" and "deepspeed_stage_3".
  static void register_strategies(StrategyRegistry& registry);

  /// The sharding bookkeeping (after setup), for tests and benchmarks.
  const detail::ShardedUnits* sharded_units() const { return units_.get(); }

 private:
  std::vector<const detail::ShardLayout*> optimizer_layouts() const;
  bool sharded_state() const { return options_.sharding().state_dict_type() == StateDictType::kSharded; }
  /// The sharded parameter every name of `model`'s parameters refers to.
  std::map<std::string, size_t> parameter_names(const Module& model) const;
  /// Where each parameter's rows lie, for the sharded checkpoint layout.
  detail::DcpPlacementOf placement() const;
  std::vector<std::string> optimizer_param_names() const;

  std::unique_ptr<detail::ShardedUnits> units_;
  const Module* sharded_model_ = nullptr;
  std::vector<size_t> optimizer_param_;  // optimizer parameter index -> sharded parameter
};

}  // namespace volt

// Strategy names -> factories (Lightning's StrategyRegistry): the Trainer's `strategy("fsdp")` looks its
// name up here. Each strategy's file registers the names it answers to in its `register_strategies`, and
// strategy_registry.cpp lists those functions in one table — explicit rather than static registrars,
// which a static library drops when nothing else references their object file (DESIGN §7). A user's
// strategy registers at run time, or goes to the Trainer as an object without a name:
//
//   volt::StrategyRegistry::global().add("my_ddp", [](const volt::StrategyOptions& o) {
//     return std::make_shared<MyDDP>(o);
//   }, "DDP that logs its buckets");
//   volt::Trainer trainer(volt::TrainerOptions().strategy("my_ddp"));
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "volt/strategies/strategy_options.h"

namespace volt {

class Strategy;

using StrategyFactory = std::function<std::shared_ptr<Strategy>(const StrategyOptions&)>;

class StrategyRegistry {
 public:
  /// The process's registry, with volt's strategies in it.
  static StrategyRegistry& global();

  /// Registers `name`; a name already registered throws volt::Error (unless `replace`).
  void add(const std::string& name, StrategyFactory factory, const std::string& description = "",
           bool replace = false);
  /// A name a strategy is known by elsewhere but not offered here: asking for it throws `reason`.
  void refuse(const std::string& name, const std::string& reason);
  bool contains(const std::string& name) const;
  /// Registered names that are offered, sorted.
  std::vector<std::string> names() const;
  const std::string& description(const std::string& name) const;
  /// The strategy `options.name()` selects; "auto" is "ddp" when devices * num_nodes > 1, else
  /// "single_device". An unknown name throws volt::Error listing the registered ones.
  std::shared_ptr<Strategy> create(const StrategyOptions& options) const;

 private:
  struct Entry {
    StrategyFactory factory;
    std::string description;
    std::string refusal;  // non-empty: asking for this name throws it
  };
  mutable std::mutex mutex_;
  std::map<std::string, Entry> entries_;
};

/// StrategyRegistry::global().create(options).
std::shared_ptr<Strategy> make_strategy(const StrategyOptions& options);

}  // namespace volt

#include "volt/strategies/strategy_registry.h"

#include "volt/core/accelerator.h"
#include "volt/error.h"
#include "volt/strategies/ddp_strategy.h"
#include "volt/strategies/fsdp_strategy.h"
#include "volt/strategies/single_device_strategy.h"
#include "volt/strategies/zero_strategy.h"

namespace volt {

StrategyRegistry& StrategyRegistry::global() {
  static StrategyRegistry* registry = [] {
    auto* r = new StrategyRegistry;  // never destroyed: factories may be looked up at exit
    // volt's strategies, as Lightning's strategies/__init__.py imports each module that registers itself.
    SingleDeviceStrategy::register_strategies(*r);
    DDPStrategy::register_strategies(*r);
    ZeroStrategy::register_strategies(*r);
    FSDPStrategy::register_strategies(*r);
    return r;
  }();
  return *registry;
}

void StrategyRegistry::add(const std::string& name, StrategyFactory factory, const std::string& description,
                           bool replace) {
  VOLT_CHECK(!name.empty() && name != "auto", "cannot register a strategy named '", name,
             "': \"auto\" chooses among the registered ones");
  VOLT_CHECK(factory != nullptr, "strategy '", name, "' registered without a factory");
  std::lock_guard<std::mutex> lock(mutex_);
  VOLT_CHECK(replace || !entries_.count(name), "strategy '", name,
             "' is already registered: pick another name, or pass replace=true");
  entries_[name] = Entry{std::move(factory), description, ""};
}

void StrategyRegistry::refuse(const std::string& name, const std::string& reason) {
  std::lock_guard<std::mutex> lock(mutex_);
  entries_[name] = Entry{nullptr, "", reason};
}

bool StrategyRegistry::contains(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mutex_);
  return name == "auto" || entries_.count(name) > 0;
}

std::vector<std::string> StrategyRegistry::names() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<std::string> out;
  for (const auto& [name, entry] : entries_)
    if (entry.refusal.empty()) out.push_back(name);
  return out;
}

const std::string& StrategyRegistry::description(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = entries_.find(name);
  VOLT_CHECK(it != entries_.end(), "no strategy '", name, "' is registered");
  return it->second.description;
}

std::shared_ptr<Strategy> StrategyRegistry::create(const StrategyOptions& options) const {
  VOLT_CHECK(options.num_nodes() >= 1, "num_nodes must be at least 1, not ", options.num_nodes());
  std::string name = options.name();
  if (name == "auto") {
    const auto devices =
        static_cast<int64_t>(Accelerator(options.accelerator(), options.devices()).devices().size());
    name = devices * options.num_nodes() > 1 ? "ddp" : "single_device";
  }
  StrategyFactory factory;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = entries_.find(name);
    if (it != entries_.end()) {
      VOLT_CHECK(it->second.refusal.empty(), "strategy '", name, "' is not offered: ", it->second.refusal);
      factory = it->second.factory;
    }
  }
  if (!factory) {
    std::string known = "auto";
    for (const auto& n : names()) known += ", " + n;
    VOLT_FAIL("unknown strategy '", name, "': use one of ", known,
              " (or register yours with volt::StrategyRegistry::global().add)");
  }
  return factory(StrategyOptions(options).name(name));
}

std::shared_ptr<Strategy> make_strategy(const StrategyOptions& options) {
  return StrategyRegistry::global().create(options);
}

}  // namespace volt

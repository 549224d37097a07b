#include "volt/strategies/single_device_strategy.h"

#include "volt/error.h"
#include "volt/strategies/strategy_registry.h"

namespace volt {

SingleDeviceStrategy::SingleDeviceStrategy(const StrategyOptions& options) : Strategy(options) {
  const int64_t processes = static_cast<int64_t>(accelerator_.devices().size()) * options.num_nodes();
  VOLT_CHECK(processes == 1, "devices=", options.devices(), " and num_nodes=", options.num_nodes(), " make ",
             processes, " processes, which strategy '", options.name(),
             "' cannot run: use strategy \"ddp\" (or \"auto\")");
}

void SingleDeviceStrategy::register_strategies(StrategyRegistry& registry) {
  const auto make = [](const StrategyOptions& options) {
    return std::make_shared<SingleDeviceStrategy>(options);
  };
  registry.add("single_device", make, "one process on one device");
  registry.add("single", make, "alias of single_device");
}

}  // namespace volt

// One process on one device (Lightning's SingleDeviceStrategy): placement and precision, no collectives.
#pragma once

#include "volt/strategies/strategy.h"

namespace volt {

class StrategyRegistry;

class SingleDeviceStrategy : public Strategy {
 public:
  explicit SingleDeviceStrategy(const StrategyOptions& options = {});
  std::string name() const override { return "single_device"; }

  /// "single_device" (and "single").
  static void register_strategies(StrategyRegistry& registry);
};

}  // namespace volt

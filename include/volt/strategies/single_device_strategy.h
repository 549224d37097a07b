// One process on one device (Lightning's SingleDeviceStrategy): placement and precision, no collectives.
#pragma once

#include "volt/strategies/strategy.h"

namespace volt {

class SingleDeviceStrategy : public Strategy {
 public:
  SingleDeviceStrategy(Accelerator accelerator, PrecisionPlugin precision, InitRng init_rng)
      : Strategy(std::move(accelerator), std::move(precision), init_rng) {}
  std::string name() const override { return "single_device"; }
};

}  // namespace volt

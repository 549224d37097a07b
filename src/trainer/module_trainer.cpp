// volt::Module's view of its Trainer. Defined in the trainer layer, so that core/module.h needs only a
// forward declaration.
#include "volt/core/module.h"
#include "volt/error.h"
#include "volt/trainer/trainer.h"

namespace volt {

Trainer& Module::trainer() const {
  VOLT_CHECK(
      trainer_ != nullptr,
      "this module is not attached to a Trainer: trainer(), current_epoch(), global_step(), device() and "
      "log_dir() work inside (and after) Trainer::fit / validate / test / predict, while that Trainer lives");
  return *trainer_;
}

int64_t Module::current_epoch() const { return trainer().current_epoch(); }
int64_t Module::global_step() const { return trainer().global_step(); }
c10::Device Module::device() const { return trainer().root_device(); }
std::string Module::log_dir() const { return trainer().log_dir(); }

}  // namespace volt

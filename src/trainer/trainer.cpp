#include "volt/trainer/trainer.h"

#include "volt/error.h"

namespace volt {
namespace {

const TrainerOptions& checked(const TrainerOptions& options) {
  const auto& s = options.strategy();
  if (s == "ddp" || s == "fsdp" || s == "zero1" || s == "zero2" || s == "zero3" || s == "deepspeed")
    VOLT_FAIL("strategy '", s, "' is not available in this version of volt yet: use \"auto\" or \"single\"");
  VOLT_CHECK(s == "auto" || s == "single", "unknown strategy '", s, "': use one of auto, single");
  return options;
}

}  // namespace

Trainer::Trainer(TrainerOptions options)
    : options_(checked(options)), accelerator_(options_.accelerator(), options_.devices()) {
  VOLT_CHECK(accelerator_.devices().size() == 1, "devices=", options_.devices(), " resolves to ",
             accelerator_.devices().size(),
             " devices, which needs a distributed strategy that this version of ",
             "volt does not have yet: use devices=1");
}

InitScope Trainer::init_module(bool empty_init) const {
  return InitScope(InitOptions()
                       .device(root_device())
                       .dtype(options_.precision().param_dtype())
                       .empty(empty_init)
                       .rng(options_.init_rng()));
}

}  // namespace volt

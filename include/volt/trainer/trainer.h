// The Trainer: owns the accelerator, precision and strategy of a run, and opens the init scope in which
// models are built directly on the target device and in the target precision.
#pragma once

#include "volt/core/accelerator.h"
#include "volt/init/init_scope.h"
#include "volt/trainer/trainer_options.h"

namespace volt {

class Trainer {
 public:
  explicit Trainer(TrainerOptions options = {});

  /// Lightning's `trainer.init_module()`: inside the returned scope, tensors land on the root device in
  /// the precision's parameter dtype. With `empty_init`, parameters get memory but no random init (load
  /// a checkpoint into them next).
  /// `{ auto scope = trainer.init_module(); auto model = GPT(cfg); }`
  InitScope init_module(bool empty_init = false) const;

  const TrainerOptions& options() const { return options_; }
  const Accelerator& accelerator() const { return accelerator_; }
  const Precision& precision() const { return options_.precision(); }
  /// The device this process places its model on.
  c10::Device root_device() const { return accelerator_.device_for_local_rank(0); }

 private:
  TrainerOptions options_;
  Accelerator accelerator_;
};

}  // namespace volt

// Callbacks hook into the Trainer's loops, as Lightning's: ModelCheckpoint, EarlyStopping,
// LearningRateMonitor and ProgressBar are callbacks, and users write their own by overriding hooks.
#pragma once

#include <cstdint>
#include <string>

#include "volt/checkpoint/checkpoint.h"

namespace volt {

class Trainer;
class Module;

class Callback {
 public:
  virtual ~Callback() = default;

  virtual void on_fit_start(Trainer&, Module&) {}
  virtual void on_fit_end(Trainer&, Module&) {}
  virtual void on_sanity_check_start(Trainer&, Module&) {}
  virtual void on_sanity_check_end(Trainer&, Module&) {}
  virtual void on_train_epoch_start(Trainer&, Module&) {}
  /// After the optimizer step (if this batch made one) and the step's logging.
  virtual void on_train_batch_end(Trainer&, Module&, int64_t /*batch_idx*/) {}
  virtual void on_train_epoch_end(Trainer&, Module&) {}
  virtual void on_validation_start(Trainer&, Module&) {}
  virtual void on_validation_batch_end(Trainer&, Module&, int64_t /*batch_idx*/) {}
  /// The epoch's validation metrics are in trainer.callback_metrics() by now.
  virtual void on_validation_end(Trainer&, Module&) {}
  virtual void on_test_start(Trainer&, Module&) {}
  virtual void on_test_batch_end(Trainer&, Module&, int64_t /*batch_idx*/) {}
  virtual void on_test_end(Trainer&, Module&) {}
  virtual void on_save_checkpoint(Trainer&, Module&, Checkpoint&) {}

  /// The key of this callback's state in a checkpoint's "callbacks" dict (Lightning's state_key, e.g.
  /// "ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min', ...}"); empty: the callback has no state.
  virtual std::string state_key() const { return ""; }
  virtual Value state_dict() const { return Value::dict(); }
  virtual void load_state_dict(const Value& /*state*/) {}
};

}  // namespace volt

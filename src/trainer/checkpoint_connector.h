// What goes into a Trainer checkpoint and back (Lightning's checkpoint connector): weights, optimizer and
// schedule state in PyTorch's layout, callbacks' state, Lightning's loop counters and volt's RNG states.
// Which rank writes is the strategy's business. Internal to the Trainer.
#pragma once

#include <string>

#include "loop_progress.h"
#include "volt/checkpoint/checkpoint.h"

namespace volt {
class Trainer;
}

namespace volt::detail {

class CheckpointConnector {
 public:
  /// The checkpoint of the trainer's current state.
  static Checkpoint dump(Trainer& trainer);
  /// Loads `path` into the trainer's model, optimizer, schedule and callbacks, sets its epoch and step,
  /// and returns where in the fit loop the checkpoint was taken.
  static LoopPosition restore(Trainer& trainer, const std::string& path);
};

}  // namespace volt::detail

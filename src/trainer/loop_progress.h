// Where the fit loop stands, and Lightning's progress counters for it (its `loops/progress.py`): what a
// checkpoint's "loops" entry holds, so that Lightning resumes volt's checkpoints and volt resumes
// Lightning's. volt adds its own entry (batches done, RNG states) to resume mid-epoch exactly.
#pragma once

#include <ATen/core/Tensor.h>

#include "volt/checkpoint/checkpoint.h"

namespace volt::detail {

struct LoopPosition {
  int64_t epoch = 0;
  int64_t global_step = 0;
  /// Training batches of the current epoch that ran, and of the whole fit.
  int64_t batches_done = 0;
  int64_t total_batches = 0;
  /// The epoch's batches all ran (a checkpoint taken at the epoch's end).
  bool epoch_batches_complete = false;
  /// Taken inside the epoch loop (else between epochs: `epoch` epochs complete).
  bool in_epoch = false;
  int64_t scheduler_steps = 0;
  /// The CPU generator's state when the epoch started (the loader's shuffle) and now.
  at::Tensor epoch_start_rng, rng;
  /// Other keys of volt's own entry, kept as read.
  Dict extra;
};

/// The checkpoint's loops["fit_loop"]: Lightning's counters plus volt's own entry.
Value fit_loop_state(const LoopPosition& position);
/// Reads a checkpoint's position: volt's own entry when present, else Lightning's counters (a checkpoint
/// without loop state was taken at an epoch's end). `epoch` and `global_step` come from the checkpoint.
LoopPosition read_fit_loop_state(const Checkpoint& checkpoint);

}  // namespace volt::detail

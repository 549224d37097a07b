// The string options of Lightning's Trainer, module and strategies that volt's code switches on, as
// NamedEnums: built from Lightning's strings ("norm", "step", "sharded"), refusing any other.
#pragma once

#include "volt/named_enum.h"

namespace volt {

/// What a Trainer is running (Lightning's TrainerFn): "" between runs, "fit", "validate", "test", "predict".
struct StageNames {
  enum Value { kNone, kFit, kValidate, kTest, kPredict };
  static constexpr const char* kNames[] = {"", "fit", "validate", "test", "predict"};
  static constexpr const char* kWhat = "stage";
};
using Stage = NamedEnum<StageNames>;

/// When a learning-rate schedule steps (Lightning's lr_scheduler "interval"): "epoch" or "step".
struct IntervalNames {
  enum Value { kEpoch, kStep };
  static constexpr const char* kNames[] = {"epoch", "step"};
  static constexpr const char* kWhat = "interval";
};
using Interval = NamedEnum<IntervalNames>;

/// How gradients are clipped (Lightning's GradClipAlgorithmType): by their total 2-norm or by value.
struct GradClipAlgorithmNames {
  enum Value { kNorm, kValue };
  static constexpr const char* kNames[] = {"norm", "value"};
  static constexpr const char* kWhat = "gradient_clip_algorithm";
};
using GradClipAlgorithm = NamedEnum<GradClipAlgorithmNames>;

/// How FSDP checkpoints (Lightning's FSDPStrategy state_dict_type): one full file or a sharded DCP
/// directory.
struct StateDictTypeNames {
  enum Value { kFull, kSharded };
  static constexpr const char* kNames[] = {"full", "sharded"};
  static constexpr const char* kWhat = "state_dict_type";
};
using StateDictType = NamedEnum<StateDictTypeNames>;

}  // namespace volt

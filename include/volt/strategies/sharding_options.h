// How FSDP ("fsdp", "deepspeed_stage_3") groups and casts parameters and saves checkpoints: Lightning's
// FSDPStrategy(auto_wrap_policy=..., mixed_precision=..., state_dict_type=...) as an option struct. The
// ZeRO stages 1 and 2 keep whole replicas and read none of it (the same options may be given to every
// strategy, as the tests' workers do).
//
//   volt::TrainerOptions().strategy("fsdp").sharding(volt::ShardingOptions().auto_wrap_modules({"Block"}))
#pragma once

#include <c10/core/ScalarType.h>

#include <c10/util/Optional.h>
#include <torch/arg.h>
#include "volt/core/enums.h"

#include <cstdint>
#include <string>
#include <vector>

namespace volt {

struct ShardingOptions {
  /// Module types (class names; namespace and LibTorch's "Impl" suffix optional: "Block") that become
  /// units whose parameters are gathered and freed together (auto_wrap_policy={Block}).
  TORCH_ARG(std::vector<std::string>, auto_wrap_modules) = {};
  /// A module whose not yet wrapped parameters reach this many elements becomes a unit (PyTorch's
  /// size_based_auto_wrap_policy); 0 = off. With neither policy the whole model is one unit.
  TORCH_ARG(int64_t, auto_wrap_min_params) = 0;
  /// FSDP mixed precision: the dtype parameters are gathered and computed in, and the one gradients are
  /// reduced in (PyTorch's MixedPrecision(param_dtype, reduce_dtype)); unset = the shards' dtype.
  TORCH_ARG(c10::optional<c10::ScalarType>, param_dtype) = c10::nullopt;
  TORCH_ARG(c10::optional<c10::ScalarType>, reduce_dtype) = c10::nullopt;
  /// How FSDP checkpoints: "full" (Lightning's default: one file as one process writes it, gathered a
  /// unit at a time) or "sharded" (a PyTorch Distributed Checkpoint directory: each rank writes its rows,
  /// Lightning's layout and meta.pt; resumes with any world size, each rank reading only its rows).
  TORCH_ARG(StateDictType, state_dict_type) = StateDictType::kFull;
};

}  // namespace volt

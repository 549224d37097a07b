// A LibTorch optimizer's state as PyTorch's `optimizer.state_dict()` spells it ({"state": {index: {...}},
// "param_groups": [...]}), so that Lightning's "optimizer_states" move both ways and a resumed run takes
// the same steps. Adam, AdamW and SGD are understood; other optimizers are refused by name.
#pragma once

#include <torch/optim/optimizer.h>

#include "volt/checkpoint/value.h"

namespace volt {

/// Throws volt::Error when a tensor appears twice among `optimizer`'s parameters (in one group or two).
/// LibTorch's optimizers step such a tensor twice per step, and PyTorch numbers its parameters once each:
/// an optimizer built from `module.parameters()` of a model with tied weights has the repeat; build it from
/// volt::unique_parameters(module) (volt/core/parameters.h), as PyTorch's `module.parameters()` gives.
void check_distinct_parameters(const torch::optim::Optimizer& optimizer);

/// Parameters are numbered across param groups in order, as PyTorch does.
Value optimizer_state_dict(const torch::optim::Optimizer& optimizer);

/// Restores hyper-parameters of each group and per-parameter state (tensors copied to the parameter's
/// device and dtype). Throws volt::Error when groups or parameter counts differ, or a parameter repeats
/// (check_distinct_parameters).
void load_optimizer_state_dict(torch::optim::Optimizer& optimizer, const Value& state);

}  // namespace volt

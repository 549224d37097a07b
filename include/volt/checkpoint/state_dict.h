// A LibTorch module's parameters and buffers as a checkpoint value, named as Python's `state_dict()` names
// them ("h.0.attn.c_attn.weight"), so files move between volt and PyTorch without renaming.
#pragma once

#include <torch/nn/module.h>

#include "volt/checkpoint/value.h"

namespace volt {

/// An ordered dict of name -> tensor (detached, sharing the module's memory): parameters first, then
/// buffers, in registration order, as LibTorch's `named_parameters()` / `named_buffers()` list them.
Value state_dict(const torch::nn::Module& module);

}  // namespace volt

// PLACEHOLDER until the deferred-init branch lands (replaced by its header).
#pragma once
#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include "volt/error.h"
namespace volt {
inline bool is_deferred(const at::Tensor&) { return false; }
inline void materialize_slice(const at::Tensor&, int64_t, int64_t, at::Tensor&) { VOLT_FAIL("deferred init not built"); }
inline at::Tensor materialize(const at::Tensor&, c10::Device) { VOLT_FAIL("deferred init not built"); }
}  // namespace volt

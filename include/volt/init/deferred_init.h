// Deferred init: a module built under InitMode::kDeferred holds meta tensors (no memory) whose init was
// recorded — keyed random fills, constant fills, writes through views such as Embedding's padding row, and
// the ops that computed its buffers — so that any slice of any of its tensors can be materialized alone,
// later, on any device: bit for bit what a materializing init_module() with the same seed gives there.
// FSDP materializes each rank's shard this way; no model code needs a reset_parameters().
//
// What slices cheaply: a tensor whose values come from keyed fills (InitRng::kCounter; float64/32/16,
// bfloat16) and constant fills, on the whole tensor or on views of it, costs what the slice costs (plus
// the size of view writes that intersect it). Anything else in a tensor's record — a random op the keyed
// generator does not serve (it is replayed with LibTorch's generator: same distribution, other values), a
// copy_ from another tensor, arithmetic in place, a buffer computed by model code — is replayed on real
// inputs: the tensor (and the deferred tensors it was computed from) is materialized whole and sliced.
//
// Limits: only ops inside a volt init scope are recorded, so write to deferred tensors inside the scope.
// Model code cannot read a deferred tensor's values during construction (item(), a copy to a real device):
// that is a volt::Error. Real tensors that recorded ops took as arguments (a literal copied in) are kept
// alive by the record until the deferred tensor dies. Memory a factory left uninitialized and nothing
// wrote materializes as zeros (a materializing scope would leave garbage there).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <torch/nn/module.h>

#include <cstdint>
#include <string>
#include <vector>

namespace volt {

/// True when `tensor` is a meta tensor built under a deferred scope whose init was recorded.
bool is_deferred(const at::Tensor& tensor);

/// Fills `out` (a contiguous tensor with end - begin elements, any device/dtype; normally the tensor's dtype)
/// with elements [begin, end) of `tensor`'s row-major flattening, bit for bit what a materializing
/// init_module() with the same seed and options gives there. Cost proportional to end - begin (plus the size
/// of any view writes that intersect the range), never a full-size temporary for keyed fills and constants.
void materialize_slice(const at::Tensor& tensor, int64_t begin, int64_t end, at::Tensor& out);

/// The whole tensor, allocated on `device` (huge pages on the CPU): for buffers and small tensors.
at::Tensor materialize(const at::Tensor& tensor, c10::Device device);

/// Replaces every deferred parameter and buffer of `module` in place (TensorImpl::shallow_copy_from, DESIGN
/// §7, per TensorImpl so tied weights stay one tensor) with materialized memory on `device`; returns their
/// names.
std::vector<std::string> materialize_module(torch::nn::Module& module, c10::Device device);

}  // namespace volt

// Safe empty init (DESIGN §3): under InitMode::kEmpty a parameter's random init is skipped, so its memory
// holds whatever the allocator gave it until a checkpoint fills it. volt records each skipped init instead
// of dropping it, and these functions find and repair whatever no checkpoint filled, so that a partial
// checkpoint never leaves garbage in a module: `volt::load_state_dict` calls initialize_uninitialized()
// itself before it returns.
//
// What a record holds: per storage, the in-place init ops issued on it (or on views of it) inside the scope
// from its first skipped random init on — the skipped `uniform_`/`normal_` with its key, and every later
// write (Embedding's padding-row `fill_`, a second init that replaces the first). A whole-storage constant
// fill or copy inside the scope, load_state_dict, or mark_initialized() erase it. Records hold no reference
// to the storage itself: they die with the module.
//
// Exactness: keyed fills (InitRng::kCounter on float64/32/16, bfloat16) are recomputed from (seed, creation
// index, element index), so a repaired tensor is bitwise what a materializing scope with the same seed
// gives, on any thread, after the scope closed. Inits the keyed generator does not serve (InitRng::kLibTorch,
// other dtypes, an explicit generator, bernoulli_ and the other random ops) are replayed with LibTorch's op
// and its default generator at repair time: correctly distributed, not bitwise reproducible.
//
// Limits: only writes inside a volt scope, load_state_dict and mark_initialized() are seen. Model code that
// reads a skipped parameter inside the empty scope (`other.copy_(weight)`, `weight * 2`) reads garbage, as
// under Lightning's empty_init. Moving or casting a module (`module->to(...)`) before the repair copies the
// garbage into new memory that no record describes: repair (or load) first, then move.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <string>
#include <vector>

namespace volt {

/// Names (as named_parameters() / named_buffers() spell them: a tied tensor under each of its names) of the
/// tensors whose memory still holds a skipped init that nothing has filled since. Meta tensors have no
/// memory and are never listed. Buffers are never skipped (model code computes them under every mode), so
/// they appear only if they share memory with a skipped parameter.
std::vector<std::string> uninitialized(const torch::nn::Module& module);

/// Replays the recorded init of every tensor uninitialized() lists (each storage once, so tied weights stay
/// one tensor) and returns the names it initialized. Regions marked by mark_initialized() keep their values.
std::vector<std::string> initialize_uninitialized(torch::nn::Module& module);

/// Declares `tensor`'s values filled by means volt cannot see (a copy outside any scope, a custom loader):
/// a later repair leaves them alone. A tensor that covers its storage erases the storage's record.
void mark_initialized(const at::Tensor& tensor);

}  // namespace volt

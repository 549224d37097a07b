// Loading a checkpoint's tensors into a LibTorch module, as Python's `Module.load_state_dict` does, with a
// report of what did not match and without ever leaving the module half-loaded by a strict failure.
#pragma once

#include <torch/nn/module.h>

#include <string>
#include <vector>

#include "volt/checkpoint/value.h"

namespace volt {

/// What `load_state_dict` found: names as Python's `state_dict()` spells them.
struct LoadReport {
  std::vector<std::string> missing;     // in the module, not in the checkpoint
  std::vector<std::string> unexpected;  // in the checkpoint, not in the module
  std::vector<std::string>
      mismatched;  // in both with different shapes: "name: checkpoint [a, b], module [c, d]"
  std::vector<std::string> loaded;
  /// Loaded by adopting the checkpoint's (mapped) memory: no copy, no cast.
  std::vector<std::string> zero_copy;
  /// Missing from the checkpoint, initialized as a plain init with the scope's seed would (their init was
  /// skipped by an empty init scope; see volt/init/uninitialized.h).
  std::vector<std::string> initialized;
  /// Missing from the checkpoint and built on the meta device: they stay meta (no memory, no values).
  std::vector<std::string> meta;

  bool complete() const { return missing.empty() && unexpected.empty() && mismatched.empty(); }
  /// "2 missing (a, b); 1 unexpected (c)" or "complete".
  std::string summary(size_t max_names = 8) const;
};

struct LoadOptions {
  LoadOptions() {}
  /// Any missing, unexpected or mismatched key throws volt::Error listing them, before anything is loaded.
  TORCH_ARG(bool, strict) = true;
  /// Adopt the checkpoint's memory instead of copying when a CPU tensor's dtype, shape and contiguity
  /// already match (the file's pages are private copy-on-write mappings: training in place is safe and
  /// the file never changes; the mapping lives as long as the parameter).
  TORCH_ARG(bool, zero_copy) = true;
};

/// Loads `source` — a dict of name -> tensor, or a Lightning checkpoint dict (its "state_dict" is used) —
/// into `module`'s parameters and persistent buffers (named_state_tensors(): a non-persistent buffer in
/// `source` is unexpected, as in PyTorch), tensor by tensor: each is cast to the parameter's dtype and
/// copied to its device on its own, so staging memory is one tensor. Parameters on the meta device (built
/// under a meta scope) are materialized on the CPU from the checkpoint. Tensors the checkpoint lacks whose
/// init an empty scope skipped are initialized before it returns (LoadReport::initialized).
LoadReport load_state_dict(torch::nn::Module& module, const Value& source, const LoadOptions& options = {});

}  // namespace volt

// A LibTorch module's parameters and buffers as a checkpoint value, named as Python's `state_dict()` names
// them ("h.0.attn.c_attn.weight"), so files move between volt and PyTorch without renaming.
#pragma once

#include <torch/nn/module.h>

#include <set>
#include <string>
#include <utility>
#include <vector>

#include "volt/checkpoint/value.h"

namespace volt {

/// Which of a module's own buffers are not part of its state, as PyTorch's
/// `register_buffer(name, tensor, persistent=False)` marks them: they follow the module (`.to`, init
/// scopes, the Trainer's placement) but state_dict(), load_state_dict() and checkpoints leave them out.
/// volt::Module derives from it; a plain part of a model can too:
///
///   struct Attention : torch::nn::Module, volt::BufferPersistence {
///     explicit Attention(int64_t block) {
///       volt::register_buffer(*this, "mask", torch::ones({block, block}).tril(), /*persistent=*/false);
///     }
///   };
class BufferPersistence {
 public:
  virtual ~BufferPersistence() = default;
  /// `name` is the module's own buffer name, without a prefix.
  bool is_persistent_buffer(const std::string& name) const { return non_persistent_.count(name) == 0; }
  const std::set<std::string>& non_persistent_buffers() const { return non_persistent_; }

 private:
  friend at::Tensor& register_buffer(torch::nn::Module&, std::string, at::Tensor, bool);
  std::set<std::string> non_persistent_;
};

/// PyTorch's `module.register_buffer(name, tensor, persistent)` for a module that derives from
/// BufferPersistence (volt::Module has it as a member). Throws volt::Error for any other module, and when
/// `name` is taken (as LibTorch's register_buffer does).
at::Tensor& register_buffer(torch::nn::Module& module, std::string name, at::Tensor tensor, bool persistent);

/// The tensors a state dict holds, in PyTorch's order: module by module, depth-first from `module`, each
/// one's parameters then its persistent buffers in registration order. A tensor registered under two
/// names (tied weights) appears under both, as in PyTorch.
std::vector<std::pair<std::string, at::Tensor>> named_state_tensors(const torch::nn::Module& module);

/// An ordered dict of name -> tensor (detached, sharing the module's memory) of named_state_tensors():
/// what Python's `module.state_dict()` returns.
Value state_dict(const torch::nn::Module& module);

}  // namespace volt

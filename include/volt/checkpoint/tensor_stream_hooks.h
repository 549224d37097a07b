// Hooks that let a checkpoint writer stream tensors it does not hold in memory: the value to save names
// them by meta tensors, and the writer asks for each one's data only when it writes it.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>

namespace volt {

struct TensorStreamHooks {
  /// Called for a meta tensor (torch files: a meta tensor over a whole storage) when its bytes are due;
  /// returns a CPU tensor of the same dtype and shape. Without it, saving a meta tensor is an error.
  std::function<at::Tensor(const at::Tensor& meta)> materialize;
  /// Called after each tensor's (torch files: each storage's) bytes are written, with the tensor as it
  /// was in the value (to release the source's pages when streaming a file through memory).
  std::function<void(const at::Tensor&)> written;
};

}  // namespace volt

// What the init engine needs to know of an operator, read once from its schema: whether it creates a
// tensor, randomly initializes one or writes one, which dtype it gives when the caller names none, and
// where its device, dtype, size... arguments sit on the stack. Internal to init/ (init_scope.cpp).
#pragma once

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>

#include <vector>

namespace volt::detail {

// What an op does, as far as the init engine cares.
enum class OpKind { kOther, kFactory, kUniform, kNormal, kOtherRandomInPlace, kFill, kCopy };

// Which dtype a factory gives when the caller names none (ATen's rules): only kDefaultFloat factories
// take the scope's dtype; arange/range and full decide by their scalar arguments.
enum class DtypeRule { kDefaultFloat, kFromRangeScalars, kFromFillValue, kNeverFloat };

// Factories the engine allocates itself (huge pages on CPU, keyed generator for rand/randn).
enum class OwnAlloc { kNone, kEmpty, kEmptyStrided, kZeros, kOnes, kFull, kRand, kRandn };

struct OpInfo {
  OpKind kind = OpKind::kOther;
  DtypeRule dtype_rule = DtypeRule::kDefaultFloat;
  OwnAlloc own_alloc = OwnAlloc::kNone;
  int device = -1, dtype = -1, layout = -1, pin_memory = -1, generator = -1, memory_format = -1;
  int size = -1, stride = -1, fill_value = -1;
  std::vector<int> written;  // arguments the op writes in place (`Tensor(a!)` in its schema)
};

/// The op's facts, classified once per schema and thread.
const OpInfo& op_info(const c10::OperatorHandle& op);

/// Whether a factory's result takes the default floating dtype (so the scope's dtype) when the caller
/// names none: its arguments start at stack[first].
bool result_is_default_float(const OpInfo& info, const torch::jit::Stack& stack, size_t first);

/// Replaces an op's `count` arguments on the stack by its result (an op the engine ran itself).
inline void replace_arguments(torch::jit::Stack* stack, size_t count, at::Tensor result) {
  torch::jit::drop(*stack, count);
  torch::jit::push(*stack, std::move(result));
}

}  // namespace volt::detail

// Classification of operators by their schemas, for the init engine's fallback (op_info.h).
#include "op_info.h"

#include <string>
#include <unordered_map>
#include <unordered_set>

namespace volt::detail {
namespace {

using Stack = torch::jit::Stack;

int argument_index(const c10::FunctionSchema& schema, const char* name) {
  const auto& args = schema.arguments();
  for (size_t i = 0; i < args.size(); ++i)
    if (args[i].name() == name) return static_cast<int>(i);
  return -1;
}

OpInfo classify(const c10::FunctionSchema& schema) {
  OpInfo info;
  const auto& name = schema.name();
  const auto& overload = schema.overload_name();
  bool takes_tensor = false;
  for (const auto& arg : schema.arguments())
    if (arg.type()->str().find("Tensor") != std::string::npos) takes_tensor = true;
  info.device = argument_index(schema, "device");
  info.dtype = argument_index(schema, "dtype");
  info.layout = argument_index(schema, "layout");
  info.pin_memory = argument_index(schema, "pin_memory");
  info.generator = argument_index(schema, "generator");
  info.memory_format = argument_index(schema, "memory_format");
  info.size = argument_index(schema, "size");
  info.stride = argument_index(schema, "stride");
  info.fill_value = argument_index(schema, "fill_value");
  // Ops that write only a tensor's metadata (autograd flags, shape, which storage) leave its values alone.
  static const std::unordered_set<std::string> metadata_only{
      "aten::requires_grad_", "aten::retain_grad", "aten::detach_",
      "aten::set_",           "aten::resize_",     "aten::resize_as_",
      "aten::as_strided_",    "aten::squeeze_",    "aten::unsqueeze_",
      "aten::transpose_",     "aten::t_",          "aten::swapdims_",
      "aten::swapaxes_",      "aten::_coalesced_", "aten::sparse_resize_"};
  for (size_t i = 0; i < schema.arguments().size() && !metadata_only.count(name); ++i) {
    const auto* alias = schema.arguments()[i].alias_info();
    if (alias != nullptr && alias->isWrite()) info.written.push_back(static_cast<int>(i));
  }

  if (name == "aten::uniform_") {
    info.kind = OpKind::kUniform;
  } else if (name == "aten::normal_") {
    info.kind = OpKind::kNormal;
  } else if (name == "aten::bernoulli_" || name == "aten::random_" || name == "aten::exponential_" ||
             name == "aten::cauchy_" || name == "aten::log_normal_" || name == "aten::geometric_") {
    info.kind = OpKind::kOtherRandomInPlace;
  } else if (name == "aten::fill_" || name == "aten::zero_") {
    info.kind = OpKind::kFill;
  } else if (name == "aten::copy_" || name == "aten::set_data") {
    info.kind = OpKind::kCopy;  // loading a checkpoint into a fresh parameter makes its pending init dead
  } else if (info.device >= 0 && !takes_tensor) {
    info.kind = OpKind::kFactory;
  }
  if (info.kind != OpKind::kFactory) return info;

  if (name == "aten::arange" || name == "aten::range") {
    info.dtype_rule = DtypeRule::kFromRangeScalars;
  } else if (name == "aten::full") {
    info.dtype_rule = DtypeRule::kFromFillValue;
  } else if (name == "aten::randint" || name == "aten::randperm" || name == "aten::tril_indices" ||
             name == "aten::triu_indices" || name.find("quantized") != std::string::npos) {
    info.dtype_rule = DtypeRule::kNeverFloat;
  }
  if (name == "aten::empty" && overload == "memory_format") info.own_alloc = OwnAlloc::kEmpty;
  if (name == "aten::empty_strided" && overload.empty()) info.own_alloc = OwnAlloc::kEmptyStrided;
  if (name == "aten::zeros" && overload.empty()) info.own_alloc = OwnAlloc::kZeros;
  if (name == "aten::ones" && overload.empty()) info.own_alloc = OwnAlloc::kOnes;
  if (name == "aten::full" && overload.empty()) info.own_alloc = OwnAlloc::kFull;
  if (name == "aten::rand" && overload.empty()) info.own_alloc = OwnAlloc::kRand;
  if (name == "aten::randn" && overload.empty()) info.own_alloc = OwnAlloc::kRandn;
  return info;
}

}  // namespace

const OpInfo& op_info(const c10::OperatorHandle& op) {
  // Per thread, so lookups need no lock; schemas live as long as their operators.
  thread_local std::unordered_map<const c10::FunctionSchema*, OpInfo> cache;
  const auto& schema = op.schema();
  auto it = cache.find(&schema);
  if (it == cache.end()) it = cache.emplace(&schema, classify(schema)).first;
  return it->second;
}

bool result_is_default_float(const OpInfo& info, const Stack& stack, size_t first) {
  switch (info.dtype_rule) {
    case DtypeRule::kDefaultFloat:
      return true;
    case DtypeRule::kNeverFloat:
      return false;
    case DtypeRule::kFromFillValue:
      return info.fill_value >= 0 && stack[first + info.fill_value].isDouble();
    case DtypeRule::kFromRangeScalars:  // floating when any of start, end, step is
      for (size_t i = first; i < stack.size(); ++i)
        if (stack[i].isDouble()) return true;
      return false;
  }
  return false;
}

}  // namespace volt::detail

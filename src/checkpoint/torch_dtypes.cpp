#include "torch_dtypes.h"

#include <cstring>

namespace volt::detail {
namespace {

const TorchDtype kTorchDtypes[] = {
    {c10::kFloat, "float32", "float", "FloatStorage"},
    {c10::kDouble, "float64", "double", "DoubleStorage"},
    {c10::kHalf, "float16", "half", "HalfStorage"},
    {c10::kBFloat16, "bfloat16", nullptr, "BFloat16Storage"},
    {c10::kLong, "int64", "long", "LongStorage"},
    {c10::kInt, "int32", "int", "IntStorage"},
    {c10::kShort, "int16", "short", "ShortStorage"},
    {c10::kChar, "int8", nullptr, "CharStorage"},
    {c10::kByte, "uint8", nullptr, "ByteStorage"},
    {c10::kBool, "bool", nullptr, "BoolStorage"},
    {c10::kComplexFloat, "complex64", "cfloat", "ComplexFloatStorage"},
    {c10::kComplexDouble, "complex128", "cdouble", "ComplexDoubleStorage"},
};

}  // namespace

const TorchDtype* torch_dtype(c10::ScalarType dtype) {
  for (const auto& known : kTorchDtypes)
    if (known.dtype == dtype) return &known;
  return nullptr;
}

c10::optional<c10::ScalarType> dtype_of_attribute(const std::string& attribute) {
  for (const auto& known : kTorchDtypes)
    if (attribute == known.name || (known.alias != nullptr && attribute == known.alias)) return known.dtype;
  return c10::nullopt;
}

c10::optional<c10::ScalarType> dtype_of_storage_class(const std::string& name) {
  if (name == "UntypedStorage") return c10::kByte;
  for (const auto& known : kTorchDtypes)
    if (name == known.storage) return known.dtype;
  return c10::nullopt;
}

}  // namespace volt::detail

#include "torch_rebuild.h"

#include <ATen/ATen.h>

#include <cstring>

#include "torch_dtypes.h"
#include "unpickler.h"
#include "volt/error.h"

namespace volt::detail {
namespace {

// The element dtype of torch.<name>, a storage class torch.save names in persistent ids.
c10::optional<c10::ScalarType> storage_class(const std::string& module, const std::string& name) {
  if (module != "torch") return c10::nullopt;
  return dtype_of_storage_class(name);
}

int64_t checked_int(const Value& v, const char* what, const std::string& where) {
  if (!v.is_int()) VOLT_FAIL(where, ": ", what, " must be an int but is ", kind_name(v.kind()));
  return v.to_int();
}

std::vector<int64_t> int_tuple(const Value& v, const char* what, const std::string& where) {
  if (!v.is_tuple() && !v.is_list()) VOLT_FAIL(where, ": tensor ", what, " must be a tuple of ints");
  std::vector<int64_t> out;
  for (const Value& item : v.items()) out.push_back(checked_int(item, what, where));
  return out;
}

// torch._utils._rebuild_tensor(_v2): (storage, storage_offset, size, stride, [requires_grad,
// backward_hooks, [metadata]]), where the storage is the 1-D tensor persistent_load() made.
Value rebuild_tensor(const std::vector<Value>& args, size_t first_extra, const Unpickler& unpickler) {
  if (args.size() < 4)
    unpickler.fail("a tensor rebuild has " + std::to_string(args.size()) + " arguments, expected at least 4");
  if (!args[0].is_tensor()) unpickler.fail("a tensor rebuild's first argument is not a storage");
  const at::Tensor& whole = args[0].to_tensor();
  const int64_t offset = checked_int(args[1], "storage offset", unpickler.what());
  const std::vector<int64_t> sizes = int_tuple(args[2], "size", unpickler.what());
  const std::vector<int64_t> strides = int_tuple(args[3], "stride", unpickler.what());
  if (sizes.size() != strides.size())
    unpickler.fail("a tensor has " + std::to_string(sizes.size()) + " sizes but " +
                   std::to_string(strides.size()) + " strides");
  // The largest element index the view touches must lie inside the storage; every step checked for overflow.
  if (offset < 0) unpickler.fail("negative storage offset");
  int64_t last = offset;
  bool empty = false;
  for (size_t d = 0; d < sizes.size(); ++d) {
    if (sizes[d] < 0 || strides[d] < 0) unpickler.fail("negative size or stride in a tensor");
    if (sizes[d] == 0) empty = true;
  }
  // LibTorch multiplies the sizes in order and throws when a step overflows (even before a later 0).
  uint64_t numel = 1;
  for (const int64_t size : sizes)
    if (__builtin_mul_overflow(numel, static_cast<uint64_t>(size), &numel) || numel > uint64_t{INT64_MAX})
      unpickler.fail("a tensor's sizes multiply to more elements than int64 can count");
  if (!empty) {
    for (size_t d = 0; d < sizes.size(); ++d) {
      int64_t span = 0;
      if (__builtin_mul_overflow(sizes[d] - 1, strides[d], &span) ||
          __builtin_add_overflow(last, span, &last))
        unpickler.fail("a tensor's sizes and strides overflow");
    }
    if (last >= whole.numel())
      unpickler.fail("a tensor view (offset " + std::to_string(offset) + ", sizes " + args[2].repr() +
                     ", strides " + args[3].repr() + ") reaches element " + std::to_string(last) +
                     " of a storage of " + std::to_string(whole.numel()));
  } else if (offset > whole.numel()) {
    unpickler.fail("an empty tensor's offset lies past its storage");
  }
  at::Tensor tensor = at::empty({0}, whole.options());
  try {
    tensor.set_(whole.storage(), offset, sizes, strides);
  } catch (const c10::Error& e) {
    unpickler.fail(std::string("LibTorch rejects a tensor view: ") + e.what_without_backtrace());
  }
  if (args.size() > first_extra && args[first_extra].is_bool() && args[first_extra].to_bool()) {
    if (!at::isFloatingType(tensor.scalar_type()) && !at::isComplexType(tensor.scalar_type()))
      unpickler.fail("requires_grad on a tensor of " + std::string(c10::toString(tensor.scalar_type())));
    tensor.requires_grad_(true);
  }
  return Value(tensor);
}

}  // namespace

bool TorchRebuild::is_known(const std::string& module, const std::string& name) {
  return storage_class(module, name).has_value() ||
         (module == "torch._utils" &&
          (name == "_rebuild_tensor_v2" || name == "_rebuild_tensor" || name == "_rebuild_parameter" ||
           name == "_rebuild_parameter_with_state")) ||
         (module == "torch._tensor" && name == "_rebuild_from_type_v2") ||
         (module == "torch" && name == "Tensor") || (module == "torch.nn.parameter" && name == "Parameter");
}

Value TorchRebuild::persistent_load(const Value& pid, const Unpickler& unpickler) {
  if (!pid.is_tuple() || pid.items().size() != 5 || !pid.items()[0].is_string() ||
      pid.items()[0].to_string() != "storage")
    unpickler.fail("unsupported persistent id " + brief_repr(pid, 4) +
                   " (torch.save writes ('storage', type, key, location, numel))");
  const auto& f = pid.items();
  c10::optional<c10::ScalarType> dtype;
  if (f[1].is_object() && !f[1].to_object().has_args)
    dtype = storage_class(f[1].to_object().module, f[1].to_object().name);
  if (!dtype) unpickler.fail("unsupported storage type " + brief_repr(f[1], 2));
  if (!f[2].is_string() || !f[3].is_string()) unpickler.fail("the storage key and location must be strings");
  const int64_t numel = checked_int(f[4], "the storage size", unpickler.what());
  if (numel < 0) unpickler.fail("negative storage size " + std::to_string(numel));
  const std::string& key = f[2].to_string();
  if (key.find('\0') != std::string::npos) unpickler.fail("a storage key holds a NUL byte");
  auto it = storages_.find(key);
  if (it == storages_.end()) it = storages_.emplace(key, load_(key, *dtype, numel, f[3].to_string())).first;
  const c10::Storage& storage = it->second;
  const int64_t element = static_cast<int64_t>(c10::elementSize(*dtype));
  if (static_cast<int64_t>(storage.nbytes()) / element < numel)
    unpickler.fail("storage '" + key + "' holds " + std::to_string(storage.nbytes()) + " bytes, fewer than " +
                   std::to_string(numel) + " elements of " + c10::toString(*dtype));
  at::Tensor whole = at::empty({0}, at::TensorOptions().dtype(*dtype));
  whole.set_(storage, 0, {numel}, {1});
  return Value(whole);
}

std::optional<Value> TorchRebuild::reduce(const Value& callable, const std::vector<Value>& a,
                                          Unpickler& unpickler) {
  if (is_global(callable, "torch._utils", "_rebuild_tensor_v2")) return rebuild_tensor(a, 4, unpickler);
  if (is_global(callable, "torch._utils", "_rebuild_tensor")) return rebuild_tensor(a, 4, unpickler);
  if (is_global(callable, "torch._utils", "_rebuild_parameter") ||
      is_global(callable, "torch._utils", "_rebuild_parameter_with_state")) {
    if (a.size() < 2 || !a[0].is_tensor())
      unpickler.fail("_rebuild_parameter expects (tensor, requires_grad, ...)");
    at::Tensor tensor = a[0].to_tensor();
    if (a[1].is_bool() && a[1].to_bool() && at::isFloatingType(tensor.scalar_type()))
      tensor.requires_grad_(true);
    return Value(tensor);
  }
  if (is_global(callable, "torch._tensor", "_rebuild_from_type_v2")) {
    // (func, type, args, state): a tensor subclass; volt keeps the tensor.
    if (a.size() < 3 || !a[2].is_tuple())
      unpickler.fail("_rebuild_from_type_v2 expects (func, type, args, state)");
    Value inner = unpickler.reduce(a[0], a[2]);
    if (!inner.is_tensor()) unpickler.fail("_rebuild_from_type_v2 rebuilds something that is not a tensor");
    return inner;
  }
  return std::nullopt;
}

std::string storage_class_name(c10::ScalarType dtype) {
  if (const TorchDtype* known = torch_dtype(dtype)) return known->storage;
  VOLT_FAIL("PyTorch files cannot hold tensors of ", c10::toString(dtype));
}

}  // namespace volt::detail

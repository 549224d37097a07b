// Python pickles as data: an unpickler that interprets only the globals torch.save and Lightning write
// (tensor rebuild functions, typed storages, OrderedDict) and keeps every other global as an opaque
// volt::Object without running anything, and a pickler that writes protocol 2 as torch.save does.
// unpickler.cpp runs the pickle machine, torch_rebuild.cpp gives torch's globals their meaning,
// pickler.cpp writes; pickle_opcodes.h is the instruction set both directions share.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Storage.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "volt/checkpoint/value.h"

namespace volt::detail {

/// Returns the storage of persistent id ('storage', <dtype>, key, location, numel). The same key must give
/// the same storage so that views stay views.
using StorageLoader = std::function<c10::Storage(const std::string& key, c10::ScalarType dtype, int64_t numel,
                                                 const std::string& location)>;

struct UnpickleOptions {
  /// Unknown globals throw instead of becoming opaque objects.
  bool strict = false;
  /// In strict mode, the globals this accepts are kept as opaque objects (referenced, called, created,
  /// built) instead of refused: a format's own data classes, such as DCP's metadata dataclasses, which its
  /// reader then interprets as data. Nothing is ever executed either way.
  std::function<bool(const std::string& module, const std::string& name)> allow_object;
  /// Nesting deeper than this is rejected (a hostile file could otherwise exhaust the stack).
  int max_depth = 1000;
};

/// `what` names the file (and record) in errors.
Value unpickle(const char* data, size_t size, const StorageLoader& load_storage, const std::string& what,
               const UnpickleOptions& options = {});

/// One storage the pickle refers to, in the order of first use; key is its decimal index.
struct PickledStorage {
  std::string key;
  c10::Storage storage;
  c10::ScalarType dtype;
};

/// Protocol 2, as torch.save writes it. Tensors are saved as views of their storages (offset, sizes,
/// strides), every storage once.
/// Meta tensors are an error unless `allow_meta` (the writer then streams their data from a hook).
std::string pickle(const Value& value, std::vector<PickledStorage>* storages, bool allow_meta = false);

/// "FloatStorage" for kFloat, ...; throws for a dtype PyTorch has no storage class for.
std::string storage_class_name(c10::ScalarType dtype);

}  // namespace volt::detail

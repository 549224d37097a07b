// What torch.save's pickle vocabulary means, for the unpickler: the allow-list of torch globals, the
// storages that persistent ids name, and the rebuild functions (torch._utils._rebuild_tensor_v2,
// _rebuild_parameter, torch._tensor._rebuild_from_type_v2) that turn a storage into a checked tensor view.
// Nothing here runs Python: each rebuild is volt's own reimplementation with every number checked.
#pragma once

#include <c10/core/Storage.h>

#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "pickle.h"
#include "volt/checkpoint/value.h"

namespace volt::detail {

class Unpickler;

/// One unpickling's torch state: the storages loaded so far, so that every view of one storage shares it.
class TorchRebuild {
 public:
  explicit TorchRebuild(const StorageLoader& load) : load_(load) {}

  /// True for the torch globals this interprets (storage classes, rebuild functions, torch.Tensor,
  /// torch.nn.parameter.Parameter): strict mode accepts them.
  static bool is_known(const std::string& module, const std::string& name);
  /// BINPERSID: the storage that ('storage', <class>, key, location, numel) names, as a 1-D tensor over
  /// all of it.
  Value persistent_load(const Value& pid, const Unpickler& unpickler);
  /// The tensor `callable(*args)` rebuilds, or nullopt when `callable` is not a torch rebuild function.
  /// Errors go through `unpickler`, which also reduces the inner call of _rebuild_from_type_v2.
  std::optional<Value> reduce(const Value& callable, const std::vector<Value>& args, Unpickler& unpickler);

 private:
  const StorageLoader& load_;
  std::unordered_map<std::string, c10::Storage> storages_;
};

}  // namespace volt::detail

// The pickle machine behind detail::unpickle(): reads Python's data (None, numbers, strings, bytes,
// containers, sets) and turns every global into an inert marker, so that nothing a file names is ever run.
// Only the globals torch_rebuild.h gives meaning to (tensors, storages, parameters) become tensors;
// the rest stay opaque volt::Objects, or are refused in strict mode.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "pickle.h"
#include "pickle_containers.h"
#include "torch_rebuild.h"
#include "volt/checkpoint/value.h"

namespace volt::detail {

/// True for the bare global `module.name` (a GLOBAL marker, not yet called).
bool is_global(const Value& v, const char* module, const char* name);

class Unpickler {
 public:
  Unpickler(const char* data, size_t size, const StorageLoader& load, const std::string& what,
            const UnpickleOptions& options);

  Value run();

  /// Throws volt::Error naming the file (`what`), the defect and the pickle byte it was found at.
  [[noreturn]] void fail(std::string message) const;
  const std::string& what() const { return what_; }
  /// What REDUCE makes of `callable(*args)`: a torch rebuild, an OrderedDict, latin1 bytes, or an opaque
  /// object (refused in strict mode unless allowed).
  Value reduce(const Value& callable, const Value& args);

 private:
  const char* take(size_t bytes);
  uint64_t le(int bytes);
  std::string line();
  std::string counted(uint64_t length);

  Value pop();
  Value& top();
  size_t floor() const { return marks_.empty() ? 0 : marks_.back(); }
  std::vector<Value> pop_mark();

  Value long_integer(uint64_t bytes);
  Value text_integer(bool is_int_opcode);
  Value new_object(const Value& cls, const Value& args);
  void build(Value state);
  Value ordered_dict(const std::vector<Value>& args);
  Value latin1_bytes(const std::vector<Value>& args);

  Value global(const std::string& module, const std::string& name);
  bool allowed(const std::string& module, const std::string& name) const {
    return options_.allow_object && options_.allow_object(module, name);
  }

  const char* const begin_;
  const char* p_;
  const char* end_;
  size_t position_ = 0;
  const std::string& what_;
  UnpickleOptions options_;
  PickleContainers containers_;
  TorchRebuild torch_;
  std::vector<Value> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, Value> memo_;
};

}  // namespace volt::detail

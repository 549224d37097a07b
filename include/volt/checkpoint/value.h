// What a checkpoint holds, independent of its file format: Python's data model reduced to what
// checkpoints use — None, bool, int, float, str, bytes, tensors, lists, tuples, dicts, and opaque objects
// (a pickled global volt does not interpret, kept with its arguments so that it can be written back).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace volt {

class Value;
class Dict;
struct Object;

enum class ValueKind { kNone, kBool, kInt, kDouble, kString, kBytes, kTensor, kList, kTuple, kDict, kObject };

/// "None", "bool", "int", "float", "str", "bytes", "Tensor", "list", "tuple", "dict", "object".
const char* kind_name(ValueKind kind);

/// A Python-like value. Containers are references, as in Python: copying a Value that holds a list, a
/// dict or an object shares it (so a pickle's shared references stay shared). Scalars and strings are
/// copied.
///
///   volt::Value hp = volt::Value::dict();
///   hp.to_dict().set("lr", 1e-3);
///   hp.to_dict().set("layers", volt::Value::list({12, 24}));
///   double lr = hp["lr"].to_double();
class Value {
 public:
  Value() = default;  // None
  Value(std::nullptr_t) {}
  Value(bool value) : kind_(ValueKind::kBool), int_(value) {}
  Value(int value) : kind_(ValueKind::kInt), int_(value) {}
  Value(int64_t value) : kind_(ValueKind::kInt), int_(value) {}
  Value(double value) : kind_(ValueKind::kDouble), double_(value) {}
  Value(const char* text) : kind_(ValueKind::kString), string_(std::make_shared<std::string>(text)) {}
  Value(std::string text)
      : kind_(ValueKind::kString), string_(std::make_shared<std::string>(std::move(text))) {}
  Value(at::Tensor tensor);

  static Value bytes(std::string data);
  static Value list(std::vector<Value> items = {});
  static Value tuple(std::vector<Value> items = {});
  /// An empty dict; `ordered` makes it a `collections.OrderedDict` when written as a pickle (what
  /// `Module.state_dict()` returns in Python).
  static Value dict(bool ordered = false);
  static Value object(std::string module, std::string name, Value args = Value::tuple());

  ValueKind kind() const { return kind_; }
  bool is_none() const { return kind_ == ValueKind::kNone; }
  bool is_bool() const { return kind_ == ValueKind::kBool; }
  bool is_int() const { return kind_ == ValueKind::kInt; }
  bool is_double() const { return kind_ == ValueKind::kDouble; }
  bool is_string() const { return kind_ == ValueKind::kString; }
  bool is_bytes() const { return kind_ == ValueKind::kBytes; }
  bool is_tensor() const { return kind_ == ValueKind::kTensor; }
  bool is_list() const { return kind_ == ValueKind::kList; }
  bool is_tuple() const { return kind_ == ValueKind::kTuple; }
  bool is_dict() const { return kind_ == ValueKind::kDict; }
  bool is_object() const { return kind_ == ValueKind::kObject; }

  // Accessors throw volt::Error naming the expected and the actual kind. On a temporary Value they return
  // by value, so that nothing refers into a Value that is gone:
  // `for (auto& [k, v] : volt::state_dict(m).to_dict())` iterates a dict that lives as long as the loop.
  // Those copies are const (a container is moved out when the temporary was its only owner): a change
  // made to one would not reach the Values that share the container.
  bool to_bool() const;
  int64_t to_int() const;
  /// A float, or an int converted to double (Python code mixes them freely: `lr=1`).
  double to_double() const;
  const std::string& to_string() const&;  // str or bytes
  std::string to_string() &&;
  const at::Tensor& to_tensor() const&;
  at::Tensor to_tensor() &&;
  /// The items of a list or a tuple.
  std::vector<Value>& items() &;
  const std::vector<Value>& items() const&;
  const std::vector<Value> items() &&;
  Dict& to_dict() &;
  const Dict& to_dict() const&;
  const Dict to_dict() &&;
  Object& to_object() &;
  const Object& to_object() const&;
  const Object to_object() &&;

  /// Dict lookup by string key; throws volt::Error listing up to a few keys that exist.
  const Value& operator[](const std::string& key) const&;
  /// On a temporary: the value itself (it shares containers, as every copy does).
  Value operator[](const std::string& key) &&;

  /// Deep equality: tensors are equal when dtype, shape and every byte of their values match (so NaNs
  /// and -0.0 compare by bits); an int and a float never compare equal, nor a list and a tuple.
  bool equals(const Value& other) const;
  /// A short Python-like rendering for messages and `volt inspect`: tensors print as
  /// `Tensor(bfloat16, [1600, 6400])`, long containers are elided.
  std::string repr(size_t max_items = 8) const;

  /// True when both hold the same container (Python's `is`); false for non-containers.
  bool same_container(const Value& other) const;
  const void* container_identity() const;

 private:
  ValueKind kind_ = ValueKind::kNone;
  union {
    int64_t int_ = 0;
    double double_;
  };
  std::shared_ptr<std::string> string_;  // str and bytes
  std::shared_ptr<at::Tensor> tensor_;
  std::shared_ptr<std::vector<Value>> items_;  // list and tuple
  std::shared_ptr<Dict> dict_;
  std::shared_ptr<Object> object_;
};

/// An insertion-ordered dict whose keys are Values, as in Python: state dicts are keyed by str, optimizer
/// state by int parameter index. Setting an existing key replaces its value in place.
class Dict {
 public:
  using Item = std::pair<Value, Value>;

  explicit Dict(bool ordered = false) : ordered_(ordered) {}

  size_t size() const { return items_.size(); }
  bool empty() const { return items_.empty(); }
  bool ordered() const { return ordered_; }
  void set_ordered(bool ordered) { ordered_ = ordered; }

  void set(Value key, Value value);
  /// nullptr when absent. Not on a temporary Dict, whose items die with it: keep the Dict in a variable.
  const Value* find(const Value& key) const&;
  Value* find(const Value& key) &;
  const Value* find(const Value& key) const&& = delete;
  bool contains(const Value& key) const { return find(key) != nullptr; }
  /// Removes `key` if present; returns whether it was.
  bool erase(const Value& key);

  std::vector<Item>::const_iterator begin() const { return items_.begin(); }
  std::vector<Item>::const_iterator end() const { return items_.end(); }
  const std::vector<Item>& items() const& { return items_; }
  /// On a temporary Dict: a copy that outlives it.
  std::vector<Item> items() const&& { return items_; }

 private:
  void reindex();
  bool ordered_;
  std::vector<Item> items_;
  // Keys by a canonical encoding that follows Python's equality (1 == 1.0 == True; tuples by value;
  // objects and tensors by identity), so lookups never scan.
  std::unordered_map<std::string, size_t> index_;
};

/// A pickled object of a class volt does not interpret (for example `pathlib.PosixPath` or a user's
/// dataclass in `hyper_parameters`): the global it names, the arguments it was created with, and what
/// was added to it afterwards. Writing it back reproduces the same pickle instructions; nothing is ever
/// executed.
struct Object {
  std::string module;
  std::string name;
  Value args = Value::tuple();  // REDUCE / NEWOBJ arguments (a tuple)
  bool has_args = false;        // false: the bare global itself (a class or a function, e.g. `torch.float32`)
  bool created_by_new = false;  // NEWOBJ (cls.__new__(cls, *args)) rather than REDUCE (callable(*args))
  Value state;                  // BUILD argument (None when there was no BUILD)
  bool has_state = false;
  std::vector<Value> appended;        // APPEND(S) on the object (a list subclass)
  std::vector<Dict::Item> set_items;  // SETITEM(S) on the object (a dict subclass)

  std::string qualified_name() const { return module + "." + name; }
};

}  // namespace volt

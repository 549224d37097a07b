// The containers an unpickling builds, kept bounded against hostile files: no cycles (a container is
// frozen once placed inside another), no nesting past a limit, and dict keys whose shared references
// cannot expand past what the pickle's size justifies. Every check fails through the Unpickler, so errors
// name the file and the pickle byte.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "volt/checkpoint/value.h"

namespace volt::detail {

class Unpickler;

/// The size of `v` with its shared references expanded (roughly what Dict's key encoding or repr() writes
/// for it), counted only up to `limit`: a pickle builds a tuple of 2**n leaves in 2n bytes.
uint64_t expanded_size(const Value& v, uint64_t limit);

/// repr() for messages about a hostile value, or "a <kind> too large to show" when its shared references
/// would expand it past a few kilobytes.
std::string brief_repr(const Value& v, size_t max_items);

class PickleContainers {
 public:
  /// `key_budget`: how many bytes all dict keys may expand to together.
  PickleContainers(const Unpickler& unpickler, int max_depth, uint64_t key_budget)
      : unpickler_(unpickler), max_depth_(max_depth), key_budget_(key_budget) {}

  /// Records that `child` is placed inside `parent`: freezes the child, refuses cycles and deep nesting.
  void adopt(const Value& parent, const Value& child);
  /// Charges a dict key against the budget.
  void charge_key(const Value& key);
  /// Refuses to let `op` modify a container already placed inside another.
  void check_mutable(const Value& container, const char* op);

  Value make_tuple(std::vector<Value> items);
  /// Sets become opaque builtins.<name>([items]) objects, which is how protocol 2 writes them back.
  Value make_set(const char* name, std::vector<Value> items);
  /// ADDITEMS: `set` must be what make_set("set", ...) made.
  void add_to_set(Value& set, std::vector<Value> items);
  /// SETITEM(S) on a dict or an opaque object; `items` alternate keys and values.
  void set_items(Value& target, std::vector<Value> items);
  /// APPEND(S) on a list or an opaque object.
  void append_items(Value& target, std::vector<Value> items);

 private:
  // Bookkeeping is keyed by container identity, so every tracked container is kept alive until the end:
  // a freed one's address could otherwise be reused by a new container and inherit its state.
  struct Tracked {
    Value keep_alive;
    int depth = 1;
    bool frozen = false;
  };
  Tracked& track(const Value& v);
  int depth(const Value& v) const;

  const Unpickler& unpickler_;
  const int max_depth_;
  uint64_t key_budget_;
  std::unordered_map<const void*, Tracked> tracked_;
};

}  // namespace volt::detail

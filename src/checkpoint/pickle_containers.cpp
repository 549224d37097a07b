#include "pickle_containers.h"

#include <algorithm>

#include "unpickler.h"

namespace volt::detail {

uint64_t expanded_size(const Value& v, uint64_t limit) {
  uint64_t size = 24;
  if (v.is_string() || v.is_bytes()) size += v.to_string().size();
  const auto add = [&](const Value& item) {
    if (size <= limit) size += expanded_size(item, limit - size);
  };
  if (v.is_list() || v.is_tuple()) {
    for (const Value& item : v.items()) add(item);
  } else if (v.is_dict()) {
    for (const auto& [key, value] : v.to_dict()) add(key), add(value);
  } else if (v.is_object()) {
    add(v.to_object().args);
  }
  return size;
}

std::string brief_repr(const Value& v, size_t max_items) {
  if (expanded_size(v, 4096) <= 4096) return v.repr(max_items);
  return std::string("a ") + kind_name(v.kind()) + " too large to show";
}

PickleContainers::Tracked& PickleContainers::track(const Value& v) {
  Tracked& t = tracked_[v.container_identity()];
  if (t.keep_alive.is_none()) t.keep_alive = v;
  return t;
}

int PickleContainers::depth(const Value& v) const {
  const void* id = v.container_identity();
  if (id == nullptr) return 0;
  auto it = tracked_.find(id);
  return it == tracked_.end() ? 1 : it->second.depth;
}

// Containers are frozen once they are placed inside another: a later mutation would be a cycle (which
// real checkpoints never hold) or a hostile file building unbounded depth.
void PickleContainers::adopt(const Value& parent, const Value& child) {
  if (child.container_identity() == nullptr) return;
  if (child.same_container(parent))
    unpickler_.fail("a container contains itself (cyclic data is not supported)");
  const int d = depth(child) + 1;
  track(child).frozen = true;
  if (d > max_depth_) unpickler_.fail("values nest deeper than " + std::to_string(max_depth_) + " levels");
  Tracked& mine = track(parent);
  mine.depth = std::max(mine.depth, d);
}

// Dicts index their keys by an encoding that expands shared references: what all keys expand to
// together is bounded by the pickle's size, so a few bytes cannot make it exponential or quadratic.
void PickleContainers::charge_key(const Value& key) {
  const uint64_t cost = expanded_size(key, key_budget_ + 1);
  if (cost > key_budget_)
    unpickler_.fail(
        "dict keys expand to more bytes than the pickle can justify (shared references in hostile keys)");
  key_budget_ -= cost;
}

void PickleContainers::check_mutable(const Value& container, const char* op) {
  auto it = tracked_.find(container.container_identity());
  if (it != tracked_.end() && it->second.frozen)
    unpickler_.fail(std::string(op) +
                    " modifies a container already placed inside another (cyclic data is not supported)");
}

Value PickleContainers::make_tuple(std::vector<Value> items) {
  Value tuple = Value::tuple();
  for (const Value& item : items) adopt(tuple, item);
  tuple.items() = std::move(items);
  return tuple;
}

Value PickleContainers::make_set(const char* name, std::vector<Value> items) {
  Value list = Value::list();
  append_items(list, std::move(items));
  Value set = Value::object("builtins", name, make_tuple({list}));
  set.to_object().has_args = true;
  adopt(set, set.to_object().args);
  return set;
}

void PickleContainers::add_to_set(Value& set, std::vector<Value> items) {
  if (!set.is_object() || set.to_object().module != "builtins" || set.to_object().name != "set" ||
      !set.to_object().has_args || set.to_object().args.items().size() != 1 ||
      !set.to_object().args.items()[0].is_list())
    unpickler_.fail("ADDITEMS on something that is not a set");
  check_mutable(set, "ADDITEMS");
  // The set holds its items through a list: adding the set itself would make a reference cycle.
  for (const Value& item : items)
    if (item.same_container(set)) unpickler_.fail("a set contains itself (cyclic data is not supported)");
  Value list = set.to_object().args.items()[0];
  track(list).frozen = false;
  append_items(list, std::move(items));
  track(list).frozen = true;
  track(set).depth = depth(list) + 1;
}

void PickleContainers::set_items(Value& target, std::vector<Value> items) {
  if (items.size() % 2) unpickler_.fail("SETITEMS has an odd number of items");
  check_mutable(target, "SETITEM");
  for (size_t i = 0; i < items.size(); i += 2) {
    adopt(target, items[i]);
    adopt(target, items[i + 1]);
    if (target.is_dict()) {
      charge_key(items[i]);
      target.to_dict().set(std::move(items[i]), std::move(items[i + 1]));
    } else if (target.is_object()) {
      target.to_object().set_items.emplace_back(std::move(items[i]), std::move(items[i + 1]));
    } else {
      unpickler_.fail("SETITEM on a " + std::string(kind_name(target.kind())));
    }
  }
}

void PickleContainers::append_items(Value& target, std::vector<Value> items) {
  check_mutable(target, "APPEND");
  for (Value& item : items) {
    adopt(target, item);
    if (target.is_list()) {
      target.items().push_back(std::move(item));
    } else if (target.is_object()) {
      target.to_object().appended.push_back(std::move(item));
    } else {
      unpickler_.fail("APPEND on a " + std::string(kind_name(target.kind())));
    }
  }
}

}  // namespace volt::detail

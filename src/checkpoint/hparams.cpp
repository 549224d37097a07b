#include "volt/checkpoint/hparams.h"

namespace volt {

HParams::HParams(const Value& dict) : values_(Value::dict()) {
  VOLT_CHECK(dict.is_dict() || dict.is_none(), "hyper-parameters are a dict, not a ", kind_name(dict.kind()));
  if (dict.is_none()) return;
  for (const auto& [key, value] : dict.to_dict()) {
    VOLT_CHECK(key.is_string(), "hyper-parameter names are strings, not ", key.repr(0));
    values_.to_dict().set(key, value);
  }
}

HParams& HParams::set(const std::string& key, Value value) {
  values_.to_dict().set(key, std::move(value));
  return *this;
}

HParams& HParams::update(const HParams& overrides) {
  for (const auto& [key, value] : overrides.values_.to_dict()) values_.to_dict().set(key, value);
  return *this;
}

const Value& HParams::at(const std::string& key) const {
  const Value* found = values_.to_dict().find(key);
  if (found == nullptr) {
    std::string names;
    for (const auto& item : values_.to_dict()) names += (names.empty() ? "" : ", ") + item.first.to_string();
    VOLT_FAIL("no hyper-parameter '", key, "' (there are: ", names.empty() ? "none" : names, ")");
  }
  return *found;
}

}  // namespace volt

// A module's hyper-parameters: what it was constructed from, saved under a checkpoint's
// "hyper_parameters" so that `load_from_checkpoint` can construct it again (Lightning's
// `save_hyperparameters()`).
#pragma once

#include <string>

#include "volt/checkpoint/value.h"
#include "volt/error.h"

namespace volt {

/// `HParams hp; hp.set("n_layer", 12).set("dropout", 0.1); int64_t n = hp.get<int64_t>("n_layer");`
class HParams {
 public:
  HParams() : values_(Value::dict()) {}
  /// From a checkpoint's hyper_parameters (a dict with str keys).
  explicit HParams(const Value& dict);

  HParams& set(const std::string& key, Value value);
  bool contains(const std::string& key) const { return values_.to_dict().contains(key); }
  bool empty() const { return values_.to_dict().empty(); }
  /// The value under `key` as T (bool, int64_t, int, double, std::string); a missing key or another kind
  /// throws volt::Error naming the key.
  template <typename T>
  T get(const std::string& key) const;
  /// As get(), but `fallback` when the key is missing.
  template <typename T>
  T get(const std::string& key, T fallback) const {
    return contains(key) ? get<T>(key) : fallback;
  }
  /// Every key of `overrides` replaces this one's.
  HParams& update(const HParams& overrides);
  /// The dict saved under "hyper_parameters".
  const Value& value() const& { return values_; }
  /// On a temporary (`config.to_hparams().value()`): the dict itself, shared, not a reference into it.
  Value value() && { return values_; }

 private:
  const Value& at(const std::string& key) const;
  // Names the key in a wrong-kind error.
  template <typename F>
  auto checked(const std::string& key, F read) const -> decltype(read()) {
    at(key);
    try {
      return read();
    } catch (const Error& e) {
      VOLT_FAIL("hyper-parameter '", key, "': ", e.what());
    }
  }
  Value values_;
};

template <>
inline bool HParams::get<bool>(const std::string& key) const {
  return checked(key, [&] { return at(key).to_bool(); });
}
template <>
inline int64_t HParams::get<int64_t>(const std::string& key) const {
  return checked(key, [&] { return at(key).to_int(); });
}
template <>
inline int HParams::get<int>(const std::string& key) const {
  return checked(key, [&] { return static_cast<int>(at(key).to_int()); });
}
template <>
inline double HParams::get<double>(const std::string& key) const {
  return checked(key, [&] { return at(key).to_double(); });
}
template <>
inline std::string HParams::get<std::string>(const std::string& key) const {
  return checked(key, [&] { return at(key).to_string(); });
}

}  // namespace volt

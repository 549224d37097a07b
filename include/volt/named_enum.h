// Lightning's string enums (its utilities/enums.py: a str subclass of Enum) in C++: an enum that code
// switches on, built from Lightning's string at the option boundary — where an unknown string is a
// volt::Error listing the valid ones — and still comparing equal to that string. Each enum is a traits
// struct (its enumerators, their names, what it is called) made a NamedEnum:
//
//   struct GradClipAlgorithmNames {
//     enum Value { kNorm, kValue };
//     static constexpr const char* kNames[] = {"norm", "value"};
//     static constexpr const char* kWhat = "gradient_clip_algorithm";
//   };
//   using GradClipAlgorithm = NamedEnum<GradClipAlgorithmNames>;
//   GradClipAlgorithm a = "value";  // a == GradClipAlgorithm::kValue, a == "value", a.name() == "value"
#pragma once

#include <cstddef>
#include <iterator>
#include <ostream>
#include <string>

#include "volt/error.h"

namespace volt {

template <typename Names>
class NamedEnum : public Names {
 public:
  using Value = typename Names::Value;

  /* implicit */ constexpr NamedEnum(Value value) : value_(value) {}
  /* implicit */ NamedEnum(const std::string& name) : value_(parse(name)) {}
  /* implicit */ NamedEnum(const char* name) : NamedEnum(std::string(name)) {}

  constexpr operator Value() const { return value_; }
  const char* name() const { return Names::kNames[static_cast<size_t>(value_)]; }

  friend bool operator==(const NamedEnum& a, const NamedEnum& b) { return a.value_ == b.value_; }
  friend bool operator!=(const NamedEnum& a, const NamedEnum& b) { return a.value_ != b.value_; }
  friend bool operator==(const NamedEnum& a, Value b) { return a.value_ == b; }
  friend bool operator!=(const NamedEnum& a, Value b) { return a.value_ != b; }
  friend bool operator==(const NamedEnum& a, const char* b) { return a == NamedEnum(b); }
  friend bool operator!=(const NamedEnum& a, const char* b) { return !(a == NamedEnum(b)); }
  friend std::ostream& operator<<(std::ostream& out, const NamedEnum& e) { return out << e.name(); }

 private:
  static Value parse(const std::string& name) {
    std::string valid;
    for (size_t i = 0; i < std::size(Names::kNames); ++i) {
      if (name == Names::kNames[i]) return static_cast<Value>(i);
      valid += (i ? ", " : "") + std::string(Names::kNames[i]);
    }
    VOLT_FAIL(Names::kWhat, " '", name, "': use one of ", valid);
  }

  Value value_;
};

}  // namespace volt

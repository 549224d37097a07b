#include "volt/core/precision.h"

#include "volt/error.h"

#include <utility>

namespace volt {
namespace {

struct PrecisionSpec {
  const char* name;
  const char* canonical;
  c10::ScalarType param_dtype;
  c10::optional<c10::ScalarType> autocast_dtype;
};

// Lightning's table (lightning/fabric/connector.py): the short forms are aliases of the canonical names.
const PrecisionSpec kSpecs[] = {
    {"64-true", "64-true", c10::kDouble, c10::nullopt},
    {"32-true", "32-true", c10::kFloat, c10::nullopt},
    {"16-true", "16-true", c10::kHalf, c10::nullopt},
    {"bf16-true", "bf16-true", c10::kBFloat16, c10::nullopt},
    {"16-mixed", "16-mixed", c10::kFloat, c10::kHalf},
    {"bf16-mixed", "bf16-mixed", c10::kFloat, c10::kBFloat16},
    {"64", "64-true", c10::kDouble, c10::nullopt},
    {"32", "32-true", c10::kFloat, c10::nullopt},
    {"16", "16-mixed", c10::kFloat, c10::kHalf},
    {"bf16", "bf16-mixed", c10::kFloat, c10::kBFloat16},
};

}  // namespace

Precision::Precision(const std::string& name) {
  for (const auto& spec : kSpecs) {
    if (name == spec.name) {
      name_ = spec.canonical;
      param_dtype_ = spec.param_dtype;
      autocast_dtype_ = spec.autocast_dtype;
      return;
    }
  }
  std::string valid;
  for (const auto& n : valid_names()) valid += (valid.empty() ? "" : ", ") + n;
  VOLT_FAIL("unknown precision '", name, "': use one of ", valid);
}

const std::vector<std::string>& Precision::valid_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> out;
    for (const auto& spec : kSpecs) out.emplace_back(spec.name);
    return out;
  }();
  return names;
}

}  // namespace volt

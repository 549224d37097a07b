// A training precision named by Lightning's strings ("bf16-true", "16-mixed", ...): the dtype parameters
// are created and kept in, and for mixed precision the dtype autocast runs compute in.
#pragma once

#include <c10/core/DeviceType.h>
#include <c10/core/ScalarType.h>
#include <c10/util/Optional.h>

#include <string>
#include <vector>

namespace volt {

class Precision {
 public:
  /// Parses Lightning's precision strings: "64-true", "64", "32-true", "32", "16-true", "bf16-true",
  /// "16-mixed", "16", "bf16-mixed", "bf16". Anything else throws volt::Error listing the valid strings.
  /* implicit */ Precision(const std::string& name = "32-true");
  /* implicit */ Precision(const char* name) : Precision(std::string(name)) {}

  /// The canonical name ("16" becomes "16-mixed", "32" becomes "32-true", as in Lightning).
  const std::string& name() const { return name_; }
  /// The dtype parameters are created in (float32 for the mixed precisions).
  c10::ScalarType param_dtype() const { return param_dtype_; }
  bool is_mixed() const { return autocast_dtype_.has_value(); }
  /// For "-mixed" precisions, the dtype autocast computes in; nullopt for "-true".
  c10::optional<c10::ScalarType> autocast_dtype() const { return autocast_dtype_; }

  /// Every string the constructor accepts, canonical names first.
  static const std::vector<std::string>& valid_names();

  bool operator==(const Precision& other) const { return name_ == other.name_; }
  bool operator!=(const Precision& other) const { return !(*this == other); }

 private:
  std::string name_;
  c10::ScalarType param_dtype_ = c10::kFloat;
  c10::optional<c10::ScalarType> autocast_dtype_;
};

/// The fastest precision that is native on `device`, and why: on CUDA "bf16-true"; on a CPU that
/// computes bf16 natively (AVX-512 BF16 or AMX) "bf16-mixed", else "32-true" (bf16 would be emulated).
struct PrecisionChoice {
  Precision precision;
  std::string reason;
};
PrecisionChoice fastest_precision(c10::DeviceType device);

/// For a 16-bit precision on a CPU that only emulates its dtype: a warning with the slowdown measured
/// here and now (a small matmul in that dtype against float32) and what to pass instead; nullopt when
/// the precision is native or not 16-bit. It never changes the precision the user asked for.
c10::optional<std::string> emulated_precision_warning(const Precision& precision, c10::DeviceType device);

}  // namespace volt

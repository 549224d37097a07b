#include "volt/core/precision.h"

#include "volt/core/cpu_features.h"
#include "volt/error.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <chrono>
#include <cstdio>
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

namespace {

// Seconds of the fastest of a few [n, n] x [n, n] matmuls in `dtype` (the op bf16-mixed's autocast runs
// in 16-bit), after one warm-up.
double matmul_seconds(c10::ScalarType dtype, int64_t n) {
  const auto a = at::ones({n, n}, at::TensorOptions().dtype(dtype)), b = a.clone();
  double best = 1e30;
  for (int i = 0; i < 4; ++i) {
    const auto start = std::chrono::steady_clock::now();
    at::mm(a, b);
    const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
    if (i > 0) best = std::min(best, took.count());
  }
  return best;
}

}  // namespace

PrecisionChoice fastest_precision(c10::DeviceType device) {
  if (device == c10::kCUDA) return {Precision("bf16-true"), "CUDA computes bfloat16 natively"};
  const auto& cpu = CpuFeatures::host();
  if (cpu.native_bf16())
    return {Precision("bf16-mixed"), std::string("this CPU computes bfloat16 natively (") +
                                         (cpu.amx_bf16 ? "amx_bf16" : "avx512_bf16") + ")"};
  return {Precision("32-true"),
          "this CPU has no native bfloat16 (no avx512_bf16 or amx_bf16): bf16 would run emulated, several "
          "times slower than float32"};
}

c10::optional<std::string> emulated_precision_warning(const Precision& precision, c10::DeviceType device) {
  if (device != c10::kCPU) return c10::nullopt;
  const c10::ScalarType dtype = precision.autocast_dtype().value_or(precision.param_dtype());
  const auto& cpu = CpuFeatures::host();
  const bool emulated =
      (dtype == c10::kBFloat16 && !cpu.native_bf16()) || (dtype == c10::kHalf && !cpu.native_fp16());
  if (!emulated) return c10::nullopt;
  const char* dtype_name = dtype == c10::kBFloat16 ? "bfloat16" : "float16";
  const char* needs = dtype == c10::kBFloat16 ? "avx512_bf16 or amx_bf16" : "avx512_fp16 or amx_fp16";
  std::string consequence;
  try {
    const int64_t n = 192;
    const double slow = matmul_seconds(dtype, n), fast = matmul_seconds(c10::kFloat, n);
    char text[160];
    std::snprintf(text, sizeof(text),
                  "a %lldx%lld matmul took %.2f ms in %s against %.2f ms in float32 (%.1fx)",
                  static_cast<long long>(n), static_cast<long long>(n), slow * 1e3, dtype_name, fast * 1e3,
                  slow / std::max(fast, 1e-9));
    consequence = text;
  } catch (const c10::Error&) {
    consequence = std::string("this LibTorch has no CPU matmul kernel for ") + dtype_name;
  }
  return "precision '" + precision.name() + "' on this CPU (" + CpuFeatures::host().summary() + ") runs " +
         dtype_name + " emulated, without " + needs + ": measured here, " + consequence +
         ". Training keeps the precision you asked for; pass precision(\"32-true\") for speed on this CPU.";
}

}  // namespace volt

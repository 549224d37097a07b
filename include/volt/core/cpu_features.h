// What the CPU at hand computes natively, read from /proc/cpuinfo's flags: machines of one kind differ
// (some have AVX-512 with native bf16, some only AVX2, where bf16 runs emulated and 5x slower than
// float32), so defaults and benchmarks ask here instead of assuming.
//
//   if (volt::CpuFeatures::host().native_bf16()) ...
#pragma once

#include <string>
#include <vector>

namespace volt {

struct CpuFeatures {
  bool avx2 = false;
  bool fma = false;
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512_bf16 = false;
  bool avx512_fp16 = false;
  bool amx_bf16 = false;
  bool amx_fp16 = false;
  /// The CPU's model name ("AMD EPYC ...").
  std::string model;

  /// bfloat16 matmuls and convolutions run in hardware (AVX-512 BF16 or AMX-BF16).
  bool native_bf16() const { return avx512_bf16 || amx_bf16; }
  /// float16 arithmetic runs in hardware (AVX-512 FP16 or AMX-FP16).
  bool native_fp16() const { return avx512_fp16 || amx_fp16; }
  /// The flags above that are set, e.g. {"avx2", "fma", "avx512f", "avx512bw", "avx512_bf16"}.
  std::vector<std::string> flags() const;
  /// "avx2 fma avx512f ... (AMD EPYC ...)": what benchmarks print beside their figures.
  std::string summary() const;

  /// Parses the text of /proc/cpuinfo (the first processor's "flags" and "model name").
  static CpuFeatures parse(const std::string& cpuinfo);
  /// This machine's, read once.
  static const CpuFeatures& host();
};

}  // namespace volt

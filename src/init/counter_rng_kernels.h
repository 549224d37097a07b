// Raw kernels behind counter_rng.h, on plain pointers so that they compile without LibTorch's headers
// and the CPU and CUDA versions can share one definition of every value (philox.h).
#pragma once

#include <cstdint>

namespace volt::detail {

enum class RawDtype : int { kFloat64, kFloat32, kFloat16, kBFloat16 };

/// What a fill draws: uniform values, or normal ones by stream v1 or v2 (volt/init/init_stream.h).
enum class Distribution : int { kUniform, kNormal24, kNormal16 };

/// The CPU kernels, lowest instruction set first. All compute the same bits; a fill uses the best one
/// the CPU supports (counter_rng.cpp may cap it, see counter_rng_cpu_kernel()).
enum class CpuKernel : int {
  kBaseline,    // x86-64 (or whatever the compiler targets elsewhere)
  kAvx2,        // AVX2 + FMA
  kAvx512,      // AVX-512 F, BW, DQ, VL
  kAvx512Bf16,  // and AVX512_BF16's float -> bfloat16 conversion
};
constexpr CpuKernel kCpuKernels[] = {CpuKernel::kBaseline, CpuKernel::kAvx2, CpuKernel::kAvx512,
                                     CpuKernel::kAvx512Bf16};

/// "x86-64", "avx2", "avx512", "avx512bf16".
const char* cpu_kernel_name(CpuKernel kernel);

/// Whether this CPU can run `kernel`.
bool cpu_kernel_supported(CpuKernel kernel);

/// Writes elements [first, first + n) of the (seed, key) stream to `out`, contiguous, single-threaded,
/// with `kernel` (the baseline one if the CPU cannot run it; float64 has one kernel). Uniform values
/// are a + b * u with u in [0, 1), normal values have mean a and standard deviation b (b as a float for
/// the 16/32-bit dtypes).
void cpu_fill(CpuKernel kernel, Distribution distribution, void* out, RawDtype dtype, int64_t n,
              uint64_t seed, uint64_t key, int64_t first, double a, double b);

// CUDA versions (counter_rng_cuda.cu, compiled only when VOLT_WITH_CUDA): launch on `stream`
// (a cudaStream_t), same values as the CPU kernels.
void cuda_uniform_fill(void* out, RawDtype dtype, int64_t n, uint64_t seed, uint64_t key, int64_t first,
                       double low, double range, void* stream);
void cuda_normal_fill(Distribution normal, void* out, RawDtype dtype, int64_t n, uint64_t seed, uint64_t key,
                      int64_t first, double mean, double std, void* stream);

}  // namespace volt::detail

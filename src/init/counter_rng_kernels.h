// Raw kernels behind counter_rng.h, on plain pointers so that they compile without LibTorch's headers
// and the CPU and CUDA versions can share one definition of every value (philox.h).
#pragma once

#include <cstdint>

namespace volt::detail {

enum class RawDtype : int { kFloat64, kFloat32, kFloat16, kBFloat16 };

/// Writes elements [first, first + n) of the (seed, key) stream to `out`, contiguous, single-threaded.
/// Uniform values are low + range * u with u in [0, 1) (the range as a float for the 16/32-bit dtypes).
void cpu_uniform_fill(void* out, RawDtype dtype, int64_t n, uint64_t seed, uint64_t key, int64_t first,
                      double low, double range);
void cpu_normal_fill(void* out, RawDtype dtype, int64_t n, uint64_t seed, uint64_t key, int64_t first,
                     double mean, double std);

/// The portable (non-AVX2) CPU path for float32/float16/bfloat16, for tests that compare it with the
/// vectorized one.
void cpu_fill_float_baseline(bool normal, void* out, RawDtype dtype, int64_t n, uint64_t seed, uint64_t key,
                             int64_t first, float a, float b);

// CUDA versions (counter_rng_cuda.cu, compiled only when VOLT_WITH_CUDA): launch on `stream`
// (a cudaStream_t), same values as the CPU kernels.
void cuda_uniform_fill(void* out, RawDtype dtype, int64_t n, uint64_t seed, uint64_t key, int64_t first,
                       double low, double range, void* stream);
void cuda_normal_fill(void* out, RawDtype dtype, int64_t n, uint64_t seed, uint64_t key, int64_t first,
                      double mean, double std, void* stream);

}  // namespace volt::detail

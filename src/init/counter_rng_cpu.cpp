// CPU kernels of the counter-based generator. The hot loops work on batches of blocks in plain arrays so
// that GCC vectorizes them; they are compiled twice (AVX2+FMA and baseline x86-64) and picked at run
// time. Both versions compute the same bits: the arithmetic is the same IEEE operations in the same
// order (explicit fma, no contraction, no fast-math).
#include "counter_rng_kernels.h"

#include "philox.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

namespace volt::detail {
namespace {

namespace px = philox;

constexpr int kBatchBlocks = 32;  // Philox blocks per batch: 128 float outputs

enum class Distribution { kUniform, kNormal };

// The 4 * kBatchBlocks float values of blocks [first_block, first_block + kBatchBlocks), one block at a
// time through philox.h: the reference path, for CPUs without AVX2.
template <Distribution D>
__attribute__((always_inline)) inline void float_batch_scalar(uint64_t seed, uint64_t key,
                                                              uint64_t first_block, float a, float b,
                                                              float* values) {
  for (int i = 0; i < kBatchBlocks; ++i) {
    uint32_t x[4];
    px::stream_block(seed, key, first_block + static_cast<uint64_t>(i), x);
    if constexpr (D == Distribution::kUniform)
      px::uniform4(x, a, b, values + 4 * i);
    else
      px::normal4(x, a, b, values + 4 * i);
  }
}

// AVX2 versions of philox.h, eight blocks per vector, operation for operation the same IEEE arithmetic.
__attribute__((target("avx2,fma"), always_inline)) inline __m256i mul_hi_lo(__m256i x, __m256i m,
                                                                            __m256i* lo) {
  const __m256i even = _mm256_mul_epu32(x, m);
  const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(x, 32), m);
  *lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
  return _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
}

__attribute__((target("avx2,fma"), always_inline)) inline __m256 unit_float8(__m256i x) {
  return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(x, 8)), _mm256_set1_ps(5.9604644775390625e-8f));
}

// (0, 1]: ((x >> 8) + 1) * 2^-24.
__attribute__((target("avx2,fma"), always_inline)) inline __m256 open_zero(__m256i x) {
  return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(_mm256_srli_epi32(x, 8), _mm256_set1_epi32(1))),
                       _mm256_set1_ps(5.9604644775390625e-8f));
}

__attribute__((target("avx2,fma"), always_inline)) inline __m256 log8(__m256 x) {
  const __m256i ix = _mm256_castps_si256(x);
  __m256 e = _mm256_cvtepi32_ps(_mm256_sub_epi32(
      _mm256_and_si256(_mm256_srli_epi32(ix, 23), _mm256_set1_epi32(0xff)), _mm256_set1_epi32(126)));
  __m256 m = _mm256_castsi256_ps(
      _mm256_or_si256(_mm256_and_si256(ix, _mm256_set1_epi32(0x007fffff)), _mm256_set1_epi32(0x3f000000)));
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 small = _mm256_cmp_ps(m, _mm256_set1_ps(0.707106781186547524f), _CMP_LT_OQ);
  e = _mm256_blendv_ps(e, _mm256_sub_ps(e, one), small);
  m = _mm256_blendv_ps(_mm256_sub_ps(m, one), _mm256_sub_ps(_mm256_add_ps(m, m), one), small);
  const __m256 z = _mm256_mul_ps(m, m);
  __m256 y = _mm256_set1_ps(7.0376836292e-2f);
  for (float c : {-1.1514610310e-1f, 1.1676998740e-1f, -1.2420140846e-1f, 1.4249322787e-1f, -1.6668057665e-1f,
                  2.0000714765e-1f, -2.4999993993e-1f, 3.3333331174e-1f})
    y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(c));
  y = _mm256_mul_ps(_mm256_mul_ps(y, m), z);
  y = _mm256_fmadd_ps(e, _mm256_set1_ps(-2.12194440e-4f), y);
  y = _mm256_fmadd_ps(z, _mm256_set1_ps(-0.5f), y);
  return _mm256_fmadd_ps(e, _mm256_set1_ps(0.693359375f), _mm256_add_ps(m, y));
}

__attribute__((target("avx2,fma"), always_inline)) inline void sincos_2pi8(__m256 u, __m256* sin_out,
                                                                           __m256* cos_out) {
  const __m256 v = _mm256_mul_ps(_mm256_set1_ps(4.0f), u);
  __m256 q = _mm256_cvtepi32_ps(_mm256_cvttps_epi32(v));
  __m256 r = _mm256_sub_ps(v, q);
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 upper = _mm256_cmp_ps(r, _mm256_set1_ps(0.5f), _CMP_GE_OQ);
  r = _mm256_blendv_ps(r, _mm256_sub_ps(r, one), upper);
  q = _mm256_blendv_ps(q, _mm256_add_ps(q, one), upper);
  const __m256i quadrant = _mm256_and_si256(_mm256_cvttps_epi32(q), _mm256_set1_epi32(3));
  const __m256 t = _mm256_mul_ps(r, _mm256_set1_ps(1.57079632679489661923f));
  const __m256 z = _mm256_mul_ps(t, t);
  __m256 s = _mm256_set1_ps(-1.9515295891e-4f);
  s = _mm256_fmadd_ps(s, z, _mm256_set1_ps(8.3321608736e-3f));
  s = _mm256_fmadd_ps(s, z, _mm256_set1_ps(-1.6666654611e-1f));
  s = _mm256_fmadd_ps(_mm256_mul_ps(s, z), t, t);
  __m256 c = _mm256_set1_ps(2.443315711809948e-5f);
  c = _mm256_fmadd_ps(c, z, _mm256_set1_ps(-1.388731625493765e-3f));
  c = _mm256_fmadd_ps(c, z, _mm256_set1_ps(4.166664568298827e-2f));
  c = _mm256_fmadd_ps(_mm256_mul_ps(c, z), z, _mm256_fmadd_ps(z, _mm256_set1_ps(-0.5f), one));
  const __m256 swap = _mm256_castsi256_ps(
      _mm256_cmpeq_epi32(_mm256_and_si256(quadrant, _mm256_set1_epi32(1)), _mm256_set1_epi32(1)));
  const __m256 sin_base = _mm256_blendv_ps(s, c, swap);
  const __m256 cos_base = _mm256_blendv_ps(c, s, swap);
  const __m256i sign = _mm256_set1_epi32(static_cast<int>(0x80000000u));
  const __m256i negate_sin = _mm256_cmpgt_epi32(quadrant, _mm256_set1_epi32(1));  // quadrants 2, 3
  const __m256i negate_cos = _mm256_cmpeq_epi32(                                  // quadrants 1, 2
      _mm256_and_si256(_mm256_add_epi32(quadrant, _mm256_set1_epi32(1)), _mm256_set1_epi32(2)),
      _mm256_set1_epi32(2));
  *sin_out = _mm256_castsi256_ps(
      _mm256_xor_si256(_mm256_castps_si256(sin_base), _mm256_and_si256(negate_sin, sign)));
  *cos_out = _mm256_castsi256_ps(
      _mm256_xor_si256(_mm256_castps_si256(cos_base), _mm256_and_si256(negate_cos, sign)));
}

template <Distribution D>
__attribute__((target("avx2,fma"), always_inline)) inline void float_batch_avx2(uint64_t seed, uint64_t key,
                                                                                uint64_t first_block, float a,
                                                                                float b, float* values) {
  // All groups of 8 blocks go through each round together: a round's multiplies have several cycles of
  // latency, and independent groups fill them.
  constexpr int kGroups = kBatchBlocks / 8;
  const __m256i m0 = _mm256_set1_epi32(static_cast<int>(px::kM0)),
                m1 = _mm256_set1_epi32(static_cast<int>(px::kM1));
  __m256i x0[kGroups], x1[kGroups], x2[kGroups], x3[kGroups];
  for (int g = 0; g < kGroups; ++g) {
    // Block indices: low words differ, high words too if a 2^32 boundary falls inside the batch.
    alignas(32) uint32_t lo[8], hi[8];
    for (int i = 0; i < 8; ++i) {
      const uint64_t index = first_block + 8u * static_cast<uint64_t>(g) + static_cast<uint64_t>(i);
      lo[i] = static_cast<uint32_t>(index);
      hi[i] = static_cast<uint32_t>(index >> 32);
    }
    x0[g] = _mm256_load_si256(reinterpret_cast<const __m256i*>(lo));
    x1[g] = _mm256_load_si256(reinterpret_cast<const __m256i*>(hi));
    x2[g] = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(key)));
    x3[g] = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(key >> 32)));
  }
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int round = 0; round < px::kRounds; ++round) {
    const __m256i key0 = _mm256_set1_epi32(static_cast<int>(k0)),
                  key1 = _mm256_set1_epi32(static_cast<int>(k1));
    for (int g = 0; g < kGroups; ++g) {
      __m256i lo0, lo1;
      const __m256i hi0 = mul_hi_lo(x0[g], m0, &lo0);
      const __m256i hi1 = mul_hi_lo(x2[g], m1, &lo1);
      x0[g] = _mm256_xor_si256(_mm256_xor_si256(hi1, x1[g]), key0);
      x2[g] = _mm256_xor_si256(_mm256_xor_si256(hi0, x3[g]), key1);
      x1[g] = lo1;
      x3[g] = lo0;
    }
    k0 += px::kW0;
    k1 += px::kW1;
  }
  const __m256 va = _mm256_set1_ps(a), vb = _mm256_set1_ps(b);
  for (int g = 0; g < kGroups; ++g) {
    __m256 w[4];
    if constexpr (D == Distribution::kUniform) {
      w[0] = _mm256_fmadd_ps(unit_float8(x0[g]), vb, va);
      w[1] = _mm256_fmadd_ps(unit_float8(x1[g]), vb, va);
      w[2] = _mm256_fmadd_ps(unit_float8(x2[g]), vb, va);
      w[3] = _mm256_fmadd_ps(unit_float8(x3[g]), vb, va);
    } else {
      const __m256 minus_two = _mm256_set1_ps(-2.0f);
      const __m256 r0 = _mm256_sqrt_ps(_mm256_mul_ps(minus_two, log8(open_zero(x0[g]))));
      const __m256 r1 = _mm256_sqrt_ps(_mm256_mul_ps(minus_two, log8(open_zero(x2[g]))));
      __m256 s0, c0, s1, c1;
      sincos_2pi8(unit_float8(x1[g]), &s0, &c0);
      sincos_2pi8(unit_float8(x3[g]), &s1, &c1);
      w[0] = _mm256_fmadd_ps(_mm256_mul_ps(r0, c0), vb, va);
      w[1] = _mm256_fmadd_ps(_mm256_mul_ps(r0, s0), vb, va);
      w[2] = _mm256_fmadd_ps(_mm256_mul_ps(r1, c1), vb, va);
      w[3] = _mm256_fmadd_ps(_mm256_mul_ps(r1, s1), vb, va);
    }
    // Interleave word k of block i to values[4 i + k]: a 4x8 transpose.
    const __m256 t0 = _mm256_unpacklo_ps(w[0], w[1]), t1 = _mm256_unpackhi_ps(w[0], w[1]);
    const __m256 t2 = _mm256_unpacklo_ps(w[2], w[3]), t3 = _mm256_unpackhi_ps(w[2], w[3]);
    const __m256 b0 = _mm256_shuffle_ps(t0, t2, 0x44), b1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    const __m256 b2 = _mm256_shuffle_ps(t1, t3, 0x44), b3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    float* out = values + 32 * g;
    _mm256_storeu_ps(out + 0, _mm256_permute2f128_ps(b0, b1, 0x20));
    _mm256_storeu_ps(out + 8, _mm256_permute2f128_ps(b2, b3, 0x20));
    _mm256_storeu_ps(out + 16, _mm256_permute2f128_ps(b0, b1, 0x31));
    _mm256_storeu_ps(out + 24, _mm256_permute2f128_ps(b2, b3, 0x31));
  }
}

// Conversions to the 16-bit dtypes, vectorized by GCC in the AVX2 copies.
void store_bfloat16(const float* values, uint16_t* out, int count) {
  for (int i = 0; i < count; ++i) out[i] = px::to_bfloat16(values[i]);
}

void store_half(const float* values, uint16_t* out, int count) {
  for (int i = 0; i < count; ++i) out[i] = px::to_half(values[i]);
}

__attribute__((target("avx2,fma"))) void store_bfloat16_avx2(const float* values, uint16_t* out, int count) {
  for (int i = 0; i < count; ++i) out[i] = px::to_bfloat16(values[i]);
}

__attribute__((target("avx2,fma"))) void store_half_avx2(const float* values, uint16_t* out, int count) {
  for (int i = 0; i < count; ++i) out[i] = px::to_half(values[i]);
}

// One batch of 4 * kBatchBlocks floats; picked once per fill and called per batch (the call is noise next
// to 16 Philox blocks).
using BatchFn = void (*)(uint64_t seed, uint64_t key, uint64_t first_block, float a, float b, float* values);

template <Distribution D>
__attribute__((target("avx2,fma"))) void batch_avx2(uint64_t seed, uint64_t key, uint64_t first_block,
                                                    float a, float b, float* values) {
  float_batch_avx2<D>(seed, key, first_block, a, b, values);
}

template <Distribution D>
void batch_scalar(uint64_t seed, uint64_t key, uint64_t first_block, float a, float b, float* values) {
  float_batch_scalar<D>(seed, key, first_block, a, b, values);
}

BatchFn batch_function(bool normal, bool use_avx2) {
  if (use_avx2) return normal ? &batch_avx2<Distribution::kNormal> : &batch_avx2<Distribution::kUniform>;
  return normal ? &batch_scalar<Distribution::kNormal> : &batch_scalar<Distribution::kUniform>;
}

bool cpu_has_avx2() {
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return avx2;
}

// Elements [first, first + n) of a float-family stream: whole batches in the middle, the partial batches
// at either end computed whole and cut.
void fill_float(BatchFn batch, bool avx2, void* out, RawDtype dtype, int64_t n, uint64_t seed, uint64_t key,
                int64_t first, float a, float b) {
  constexpr int64_t kBatch = 4 * kBatchBlocks;
  alignas(64) float values[kBatch];  // every element is written by `batch` before it is read
  int64_t done = 0;
  while (done < n) {
    const int64_t element = first + done;
    const int64_t batch_start = element / kBatch * kBatch;
    const int offset = static_cast<int>(element - batch_start);
    const int count = static_cast<int>(std::min<int64_t>(kBatch - offset, n - done));
    batch(seed, key, static_cast<uint64_t>(batch_start / 4), a, b, values);
    switch (dtype) {
      case RawDtype::kFloat32:
        std::memcpy(static_cast<float*>(out) + done, values + offset,
                    sizeof(float) * static_cast<size_t>(count));
        break;
      case RawDtype::kBFloat16:
        (avx2 ? store_bfloat16_avx2 : store_bfloat16)(values + offset, static_cast<uint16_t*>(out) + done,
                                                      count);
        break;
      case RawDtype::kFloat16:
        (avx2 ? store_half_avx2 : store_half)(values + offset, static_cast<uint16_t*>(out) + done, count);
        break;
      case RawDtype::kFloat64:
        break;
    }
    done += count;
  }
}

// float64: two words per uniform, four per Box–Muller pair; scalar libm (float64 init is rare).
void fill_double(bool normal, double* out, int64_t n, uint64_t seed, uint64_t key, int64_t first, double a,
                 double b) {
  uint32_t x[4];
  for (int64_t done = 0; done < n; ++done) {
    const auto element = static_cast<uint64_t>(first + done);
    px::stream_block(seed, key, element / 2, x);
    const bool odd = element % 2 == 1;
    if (!normal) {
      const double u = odd ? px::unit_double(x[2], x[3]) : px::unit_double(x[0], x[1]);
      out[done] = std::fma(u, b, a);
    } else {
      const double u1 = px::unit_double(x[0], x[1]) + 1.1102230246251565e-16;  // (0, 1]
      const double u2 = px::unit_double(x[2], x[3]);
      const double radius = std::sqrt(-2.0 * std::log(u1));
      const double angle = 6.283185307179586477 * u2;
      out[done] = std::fma(radius * (odd ? std::sin(angle) : std::cos(angle)), b, a);
    }
  }
}

void fill(bool normal, void* out, RawDtype dtype, int64_t n, uint64_t seed, uint64_t key, int64_t first,
          double a, double b) {
  if (dtype == RawDtype::kFloat64)
    return fill_double(normal, static_cast<double*>(out), n, seed, key, first, a, b);
  const bool avx2 = cpu_has_avx2();
  fill_float(batch_function(normal, avx2), avx2, out, dtype, n, seed, key, first, static_cast<float>(a),
             static_cast<float>(b));
}

}  // namespace

void cpu_uniform_fill(void* out, RawDtype dtype, int64_t n, uint64_t seed, uint64_t key, int64_t first,
                      double low, double range) {
  fill(/*normal=*/false, out, dtype, n, seed, key, first, low, range);
}

void cpu_normal_fill(void* out, RawDtype dtype, int64_t n, uint64_t seed, uint64_t key, int64_t first,
                     double mean, double std) {
  fill(/*normal=*/true, out, dtype, n, seed, key, first, mean, std);
}

void cpu_fill_float_baseline(bool normal, void* out, RawDtype dtype, int64_t n, uint64_t seed, uint64_t key,
                             int64_t first, float a, float b) {
  fill_float(batch_function(normal, false), false, out, dtype, n, seed, key, first, a, b);
}

}  // namespace volt::detail

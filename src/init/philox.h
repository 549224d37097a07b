// The one definition of every value volt's init generator produces: Philox4x32-10 (Salmon, Moraes, Dror,
// Shaw, SC'11 — passes TestU01's BigCrush) and the float math that turns its words into uniform and normal
// values. Shared by the CPU kernels and the CUDA kernels, so both compute bit-identical results: every
// multiply-add is an explicit fma, and logf/sincos are volt's own polynomials rather than libm's.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define VOLT_HD __host__ __device__ __forceinline__
#else
#define VOLT_HD inline __attribute__((always_inline))
#endif

namespace volt::detail::philox {

constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;  // Random123's round multipliers
constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;  // key schedule (Weyl) increments
constexpr int kRounds = 10;

VOLT_HD float bits_to_float(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

VOLT_HD uint32_t float_to_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}

VOLT_HD float fma_f(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
  return __fmaf_rn(a, b, c);
#else
  return __builtin_fmaf(a, b, c);
#endif
}

VOLT_HD float sqrt_f(float x) {
#if defined(__CUDA_ARCH__)
  return __fsqrt_rn(x);
#else
  return __builtin_sqrtf(x);
#endif
}

/// One Philox4x32-10 block: counter (c0..c3), key (k0, k1) -> four 32-bit words, as Random123's
/// philox4x32_R(10, ctr, key).
VOLT_HD void block(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1,
                   uint32_t out[4]) {
#if defined(__CUDACC__)
#pragma unroll
#endif
  for (int round = 0; round < kRounds; ++round) {
    const uint64_t p0 = static_cast<uint64_t>(kM0) * c0;
    const uint64_t p1 = static_cast<uint64_t>(kM1) * c2;
    const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1 ^ k0;
    const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c3 ^ k1;
    c1 = static_cast<uint32_t>(p1);
    c3 = static_cast<uint32_t>(p0);
    c0 = n0;
    c2 = n2;
    k0 += kW0;
    k1 += kW1;
  }
  out[0] = c0;
  out[1] = c1;
  out[2] = c2;
  out[3] = c3;
}

/// Block `index` of stream (seed, key): counter = (index lo, index hi, key lo, key hi), Philox key = seed.
VOLT_HD void stream_block(uint64_t seed, uint64_t key, uint64_t index, uint32_t out[4]) {
  block(static_cast<uint32_t>(index), static_cast<uint32_t>(index >> 32), static_cast<uint32_t>(key),
        static_cast<uint32_t>(key >> 32), static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32),
        out);
}

/// [0, 1) with 24 random bits: exact in float.
VOLT_HD float unit_float(uint32_t x) { return static_cast<float>(x >> 8) * 5.9604644775390625e-8f; }

/// (0, 1]: the argument of Box–Muller's logarithm never reaches zero.
VOLT_HD float unit_float_open_zero(uint32_t x) {
  return static_cast<float>((x >> 8) + 1u) * 5.9604644775390625e-8f;
}

/// Natural log for x in [2^-24, 1] (Cephes logf's reduction and minimax polynomial, ~1 ulp).
VOLT_HD float log_f(float x) {
  const uint32_t ix = float_to_bits(x);
  float e = static_cast<float>(static_cast<int32_t>((ix >> 23) & 0xff) - 126);
  float m = bits_to_float((ix & 0x007fffffu) | 0x3f000000u);  // [0.5, 1)
  const bool small = m < 0.707106781186547524f;
  e = small ? e - 1.0f : e;
  m = small ? m + m - 1.0f : m - 1.0f;
  const float z = m * m;
  float y = 7.0376836292e-2f;
  y = fma_f(y, m, -1.1514610310e-1f);
  y = fma_f(y, m, 1.1676998740e-1f);
  y = fma_f(y, m, -1.2420140846e-1f);
  y = fma_f(y, m, 1.4249322787e-1f);
  y = fma_f(y, m, -1.6668057665e-1f);
  y = fma_f(y, m, 2.0000714765e-1f);
  y = fma_f(y, m, -2.4999993993e-1f);
  y = fma_f(y, m, 3.3333331174e-1f);
  y = y * m * z;
  y = fma_f(e, -2.12194440e-4f, y);
  y = fma_f(z, -0.5f, y);
  return fma_f(e, 0.693359375f, m + y);
}

/// sin and cos of 2*pi*u for u in [0, 1): exact quadrant reduction of 4u, Cephes sinf/cosf polynomials on
/// [-pi/4, pi/4].
VOLT_HD void sincos_2pi(float u, float* sin_out, float* cos_out) {
  const float v = 4.0f * u;  // exact
  float q = static_cast<float>(static_cast<int32_t>(v));
  float r = v - q;  // exact, [0, 1)
  const bool upper = r >= 0.5f;
  r = upper ? r - 1.0f : r;
  q = upper ? q + 1.0f : q;
  const int32_t quadrant = static_cast<int32_t>(q) & 3;
  const float t = r * 1.57079632679489661923f;
  const float z = t * t;
  float s = -1.9515295891e-4f;
  s = fma_f(s, z, 8.3321608736e-3f);
  s = fma_f(s, z, -1.6666654611e-1f);
  s = fma_f(s * z, t, t);
  float c = 2.443315711809948e-5f;
  c = fma_f(c, z, -1.388731625493765e-3f);
  c = fma_f(c, z, 4.166664568298827e-2f);
  c = fma_f(c * z, z, fma_f(z, -0.5f, 1.0f));
  const bool swap = quadrant & 1;
  const float sin_base = swap ? c : s;
  const float cos_base = swap ? s : c;
  *sin_out = (quadrant >= 2) ? -sin_base : sin_base;
  *cos_out = (quadrant == 1 || quadrant == 2) ? -cos_base : cos_base;
}

/// float -> bfloat16 bits, round to nearest even; NaN stays NaN.
VOLT_HD uint16_t to_bfloat16(float f) {
  const uint32_t bits = float_to_bits(f);
  const uint32_t rounded = bits + 0x7fffu + ((bits >> 16) & 1u);
  const bool nan = (bits & 0x7fffffffu) > 0x7f800000u;
  return static_cast<uint16_t>(nan ? 0x7fc0u : (rounded >> 16));
}

/// float -> IEEE half bits, round to nearest even, with subnormals, overflow to infinity and NaN
/// (F. Giesen's float_to_half_fast3_rtne).
VOLT_HD uint16_t to_half(float f) {
  uint32_t x = float_to_bits(f);
  const uint32_t sign = x & 0x80000000u;
  x ^= sign;
  uint32_t out;
  if (x >= (127u + 16u) << 23) {
    out = x > (255u << 23) ? 0x7e00u : 0x7c00u;
  } else if (x < (113u << 23)) {
    const float denormal_magic = bits_to_float(((127u - 15u) + (23u - 10u) + 1u) << 23);
    out = float_to_bits(bits_to_float(x) + denormal_magic) - float_to_bits(denormal_magic);
  } else {
    const uint32_t mantissa_odd = (x >> 13) & 1u;
    x += (static_cast<uint32_t>(15 - 127) << 23) + 0xfffu;
    x += mantissa_odd;
    out = x >> 13;
  }
  return static_cast<uint16_t>(out | (sign >> 16));
}

/// The four uniform floats of one block, scaled to [low, high).
VOLT_HD void uniform4(const uint32_t x[4], float low, float range, float out[4]) {
  for (int lane = 0; lane < 4; ++lane) out[lane] = fma_f(unit_float(x[lane]), range, low);
}

/// The four normal floats of one block: Box–Muller on lanes (0, 1) and (2, 3); even elements take the
/// cosine, odd ones the sine.
VOLT_HD void normal4(const uint32_t x[4], float mean, float stddev, float out[4]) {
  for (int pair = 0; pair < 2; ++pair) {
    const float radius = sqrt_f(-2.0f * log_f(unit_float_open_zero(x[2 * pair])));
    float s, c;
    sincos_2pi(unit_float(x[2 * pair + 1]), &s, &c);
    out[2 * pair] = fma_f(radius * c, stddev, mean);
    out[2 * pair + 1] = fma_f(radius * s, stddev, mean);
  }
}

/// [0, 1) with 53 random bits from two words (lo, hi).
VOLT_HD double unit_double(uint32_t lo, uint32_t hi) {
  return static_cast<double>(((static_cast<uint64_t>(hi) << 32) | lo) >> 11) * 1.1102230246251565e-16;
}

}  // namespace volt::detail::philox

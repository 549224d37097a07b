// The one definition of every value volt's init generator produces: Philox4x32-10 (Salmon, Moraes, Dror,
// Shaw, SC'11 — passes TestU01's BigCrush) and the math that turns its words into uniform and normal
// values. The CPU kernels (counter_rng_cpu.cpp) and the CUDA kernels (counter_rng_cuda.cu) both compute
// through these functions, so they agree bit for bit: every multiply-add is an explicit fma and no
// product here feeds an addition any other way, so there is nothing for a compiler to contract (the CPU
// file is built with -ffp-contract=off and the CUDA one with --fmad=false all the same), and log and
// sin/cos for the 16/32-bit dtypes are volt's own branch-free polynomials rather than libm's.
//
// Element i of stream (seed, key), for the float32/float16/bfloat16 dtypes:
//   x = Philox4x32-10(counter = (i/4 lo, i/4 hi, key lo, key hi), key = (seed lo, seed hi))
//   uniform: fma(u(x[i%4]), range, low), u(w) = (w >> 8) * 2^-24 in [0, 1)
//   normal:  pair p = (i%4)/2 of words: r = sqrt(-2 ln u1), u1 = ((x[2p] >> 8) + 1) * 2^-24 in (0, 1],
//            angle 2 pi u(x[2p+1]); z = r cos (i even) or r sin (i odd); fma(z, std, mean)
//   then rounded to the dtype to nearest even.
// That normal transform is stream v1 (InitStream::kPhiloxBoxMuller24). Stream v2 (kPhiloxBoxMuller16)
// makes a pair from one word: element i takes word w = x[(i%8)/2] of block i/8 (counter as above with
// i/8), u1 = ((w & 0xffff) + 1/2) * 2^-16 in (0, 1), angle 2 pi (w >> 16) 2^-16, z = r cos (i even) or
// r sin (i odd), with the shorter log of minus_two_log_unit16. Uniform values are the same in both.
// For float64, element i uses block i/2 (see uniform_double and normal_double).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define VOLT_HD __host__ __device__ __forceinline__
#else
#define VOLT_HD inline
#endif

namespace volt::detail::philox {

constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;  // round multipliers (Random123)
constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;  // key schedule (Weyl) increments
constexpr int kRounds = 10;

constexpr float kTwoPowMinus24 = 0x1p-24f;
constexpr double kTwoPowMinus53 = 0x1p-53;

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

/// One Philox4x32-10 block, as Random123's philox4x32_R(10, ctr, key): counter (c0..c3), key (k0, k1).
VOLT_HD void block(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1,
                   uint32_t out[4]) {
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int round = 0; round < kRounds; ++round) {
    const uint64_t p0 = static_cast<uint64_t>(kM0) * c0;
    const uint64_t p1 = static_cast<uint64_t>(kM1) * c2;
    const uint32_t next0 = static_cast<uint32_t>(p1 >> 32) ^ c1 ^ k0;
    const uint32_t next2 = static_cast<uint32_t>(p0 >> 32) ^ c3 ^ k1;
    c1 = static_cast<uint32_t>(p1);
    c3 = static_cast<uint32_t>(p0);
    c0 = next0;
    c2 = next2;
    k0 += kW0;
    k1 += kW1;
  }
  out[0] = c0;
  out[1] = c1;
  out[2] = c2;
  out[3] = c3;
}

/// Block `index` of stream (seed, key): counter (index lo, index hi, key lo, key hi), Philox key seed.
VOLT_HD void stream_block(uint64_t seed, uint64_t key, uint64_t index, uint32_t out[4]) {
  block(static_cast<uint32_t>(index), static_cast<uint32_t>(index >> 32), static_cast<uint32_t>(key),
        static_cast<uint32_t>(key >> 32), static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32),
        out);
}

/// [0, 1) from the top 24 bits of a word; exact in float.
VOLT_HD float unit_float(uint32_t word) { return static_cast<float>(word >> 8) * kTwoPowMinus24; }

/// (0, 1]: Box–Muller's logarithm never sees zero.
VOLT_HD float unit_float_open_zero(uint32_t word) {
  return static_cast<float>((word >> 8) + 1u) * kTwoPowMinus24;
}

VOLT_HD float uniform_float(uint32_t word, float low, float range) {
  return fma_f(unit_float(word), range, low);
}

/// -2 ln u1 for u1 = unit_float_open_zero(word) = n 2^-24, n in [1, 2^24]: Box–Muller's r^2, within
/// 1 ulp. u1 = 2^k (1 + f) with 1 + f in [sqrt(1/2), sqrt(2)), found by integer arithmetic on the bits of
/// float(n) (no compare, no branch; the 2^-24 goes into k); then ln(1 + f) = f - f^2/2 + f^3 P(f) with
/// Cephes logf's P, evaluated by Estrin's scheme (a shorter dependency chain than Horner's, which lets
/// more vectors overlap), and k ln 2 in two parts, the high one exact. Every constant carries the factor
/// -2, which is exact.
VOLT_HD float minus_two_log_unit(uint32_t word) {
  constexpr float kP0 = -2.0f * 3.3333331174e-1f, kP1 = -2.0f * -2.4999993993e-1f,
                  kP2 = -2.0f * 2.0000714765e-1f, kP3 = -2.0f * -1.6668057665e-1f,
                  kP4 = -2.0f * 1.4249322787e-1f, kP5 = -2.0f * -1.2420140846e-1f,
                  kP6 = -2.0f * 1.1676998740e-1f, kP7 = -2.0f * -1.1514610310e-1f,
                  kP8 = -2.0f * 7.0376836292e-2f;
  constexpr float kLn2High = -2.0f * 0.693359375f, kLn2Low = -2.0f * -2.12194440e-4f;
  const uint32_t bits = float_to_bits(static_cast<float>((word >> 8) + 1u));  // n, exact
  const uint32_t offset = bits - 0x3f3504f3u;  // bits of sqrt(1/2): below it, 1 + f moves up an octave
  const float k = static_cast<float>((static_cast<int32_t>(offset) >> 23) - 24);
  const float f = bits_to_float(bits - (offset & 0xff800000u)) - 1.0f;  // exact (Sterbenz)
  const float f2 = f * f, f3 = f2 * f, f4 = f2 * f2;
  const float p01 = fma_f(kP1, f, kP0), p23 = fma_f(kP3, f, kP2);
  const float p45 = fma_f(kP5, f, kP4), p67 = fma_f(kP7, f, kP6);
  const float p03 = fma_f(p23, f2, p01), p48 = fma_f(fma_f(kP8, f2, p67), f2, p45);
  const float p = fma_f(p48, f4, p03);
  const float y = fma_f(p, f3, fma_f(k, kLn2Low, f2));  // -2 (f^3 P - f^2/2 + k ln2_low)
  return fma_f(k, kLn2High, fma_f(f, -2.0f, y));        // k ln2_high is exact
}

/// sin and cos of 2 pi u, u = unit_float(word), within 2 ulp: the quadrant reduction of 4u is exact and
/// done on the word's bits (4u = q + r with q the nearest integer, r in [-1/2, 1/2)), then Cephes
/// sinf/cosf polynomials on t = r pi/2 in [-pi/4, pi/4], with t^3 and t^4 formed beside them so that
/// each ends in one fma.
VOLT_HD void sincos_2pi(uint32_t word, float* sin_out, float* cos_out) {
  const uint32_t quadrant = (word + (1u << 29)) & 0xc0000000u;    // q in the top two bits
  const int32_t r_fixed = static_cast<int32_t>(word << 2) >> 10;  // r * 2^22, exact
  const float t = static_cast<float>(r_fixed) * 0x1.921fb6p-22f;  // float(pi/2) * 2^-22
  const float t2 = t * t, t3 = t2 * t, t4 = t2 * t2;
  const float sp = fma_f(fma_f(-1.9515295891e-4f, t2, 8.3321608736e-3f), t2, -1.6666654611e-1f);
  const float cp = fma_f(fma_f(2.443315711809948e-5f, t2, -1.388731625493765e-3f), t2, 4.166664568298827e-2f);
  const float s = fma_f(sp, t3, t);
  const float c = fma_f(cp, t4, fma_f(t2, -0.5f, 1.0f));
  // q = 0..3 rotates (cos, sin) by q quarter turns: odd q swaps them; sin is negated for q = 2, 3,
  // cos for q = 1, 2 (top bit xor next bit).
  const bool swap = (quadrant & 0x40000000u) != 0;
  const uint32_t sin_sign = quadrant & 0x80000000u;
  const uint32_t cos_sign = (quadrant ^ (quadrant << 1)) & 0x80000000u;
  *sin_out = bits_to_float(float_to_bits(swap ? c : s) ^ sin_sign);
  *cos_out = bits_to_float(float_to_bits(swap ? s : c) ^ cos_sign);
}

/// Box–Muller's radius sqrt(-2 ln u1) for the pair whose first word is `word`.
VOLT_HD float box_muller_radius(uint32_t word) { return sqrt_f(minus_two_log_unit(word)); }

/// The two normal values of a Box–Muller pair from its radius and its second word: the cosine one (even
/// element) and the sine one.
VOLT_HD void box_muller_values(float radius, uint32_t angle_word, float mean, float stddev, float* even,
                               float* odd) {
  float s, c;
  sincos_2pi(angle_word, &s, &c);
  *even = fma_f(radius * c, stddev, mean);
  *odd = fma_f(radius * s, stddev, mean);
}

VOLT_HD void box_muller(uint32_t radius_word, uint32_t angle_word, float mean, float stddev, float* even,
                        float* odd) {
  box_muller_values(box_muller_radius(radius_word), angle_word, mean, stddev, even, odd);
}

/// Stream v2's -2 ln u1 for u1 = ((word & 0xffff) + 1/2) 2^-16 = n 2^-17, n = 1, 3, ..., 2^17 - 1: the
/// middle of the input's 2^-16 cell, so that E[-2 ln u1] is 2 within 1.1e-5 (the cell's right end, as
/// in v1, would give 2 - 2.0e-4 at 16 bits: a variance 1e-4 low) and |z| <= sqrt(2 ln 2^17) = 4.85. The
/// reduction of minus_two_log_unit, with a degree-5 P fitted (iteratively reweighted least squares) to
/// the 2^16 values f takes here: within 6e-7 relative of ln(1 + f), while neighbouring inputs' -2 ln u1
/// differ by at least 4e-5 relative, so the error is below what 16-bit inputs resolve, at two thirds of
/// v1's coefficients.
VOLT_HD float minus_two_log_unit16(uint32_t word) {
  constexpr float kP0 = -2.0f * 0.3333456516265869f, kP1 = -2.0f * -0.24986028671264648f,
                  kP2 = -2.0f * 0.19918979704380035f, kP3 = -2.0f * -0.17081134021282196f,
                  kP4 = -2.0f * 0.16026541590690613f, kP5 = -2.0f * -0.10390982031822205f;
  constexpr float kLn2High = -2.0f * 0.693359375f, kLn2Low = -2.0f * -2.12194440e-4f;
  const uint32_t bits = float_to_bits(static_cast<float>(2u * (word & 0xffffu) + 1u));  // n, exact
  const uint32_t offset = bits - 0x3f3504f3u;  // as in minus_two_log_unit
  const float k = static_cast<float>((static_cast<int32_t>(offset) >> 23) - 17);
  const float f = bits_to_float(bits - (offset & 0xff800000u)) - 1.0f;  // exact (Sterbenz)
  const float f2 = f * f, f3 = f2 * f;
  const float p01 = fma_f(kP1, f, kP0), p23 = fma_f(kP3, f, kP2), p45 = fma_f(kP5, f, kP4);
  const float p = fma_f(fma_f(p45, f2, p23), f2, p01);
  const float y = fma_f(p, f3, fma_f(k, kLn2Low, f2));
  return fma_f(k, kLn2High, fma_f(f, -2.0f, y));
}

/// Stream v2's pair from one word: radius from its low 16 bits, angle from its high 16 (sincos_2pi of
/// the word with the low half cleared, which is exact for it).
VOLT_HD float box_muller16_radius(uint32_t word) { return sqrt_f(minus_two_log_unit16(word)); }

VOLT_HD void box_muller16(uint32_t word, float mean, float stddev, float* even, float* odd) {
  box_muller_values(box_muller16_radius(word), word & 0xffff0000u, mean, stddev, even, odd);
}

/// float -> bfloat16 bits (in the low half), round to nearest even; NaN -> quiet NaN (as c10::BFloat16).
VOLT_HD uint32_t bfloat16_bits(float f) {
  const uint32_t bits = float_to_bits(f);
  const uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
  return f != f ? 0x7fc0u : rounded;
}

VOLT_HD uint16_t to_bfloat16(float f) { return static_cast<uint16_t>(bfloat16_bits(f)); }

/// float -> IEEE half bits (in the low half), round to nearest even, with subnormals, overflow to
/// infinity and NaN. Integer arithmetic only, every case computed and one selected, so that it
/// vectorizes (comparisons are on signed values: AVX2 has no unsigned compare).
VOLT_HD uint32_t half_bits(float f) {
  const uint32_t bits = float_to_bits(f);
  const uint32_t sign = (bits >> 16) & 0x8000u;
  const int32_t magnitude = static_cast<int32_t>(bits & 0x7fffffffu);
  const int32_t overflow = magnitude > 0x7f800000 ? 0x7e00 : 0x7c00;  // NaN stays NaN
  // Normal halves: rebias the exponent (127 -> 15) and round the low 13 mantissa bits to nearest even.
  const auto unsigned_magnitude = static_cast<uint32_t>(magnitude);
  const auto normal =
      static_cast<int32_t>((unsigned_magnitude + 0xc8000fffu + ((unsigned_magnitude >> 13) & 1u)) >> 13);
  // Subnormal halves (below 2^-14): the significand with its implicit bit, shifted right by
  // 126 - exponent (at most 31, which already gives 0) and rounded to nearest even. Larger exponents are
  // clamped only to keep the shift defined; their result is not selected.
  const int32_t significand = (magnitude & 0x007fffff) | 0x00800000;
  const int32_t exponent = magnitude >> 23 < 112 ? magnitude >> 23 : 112;
  const int32_t shift = 126 - exponent < 31 ? 126 - exponent : 31;
  const int32_t subnormal = (significand + ((1 << (shift - 1)) - 1) + ((significand >> shift) & 1)) >> shift;
  const int32_t half = magnitude >= 0x47800000 ? overflow : magnitude < 0x38800000 ? subnormal : normal;
  return static_cast<uint32_t>(half) | sign;
}

VOLT_HD uint16_t to_half(float f) { return static_cast<uint16_t>(half_bits(f)); }

/// The float value of element `index` of the stream, before rounding to the dtype: the definition the
/// vectorized kernels reproduce (kernels compute whole blocks; this is for tests and references).
VOLT_HD float float_element(bool normal, uint64_t seed, uint64_t key, uint64_t index, float a, float b) {
  uint32_t x[4];
  stream_block(seed, key, index / 4, x);
  const int lane = static_cast<int>(index % 4);
  if (!normal) return uniform_float(x[lane], a, b);
  float even, odd;
  box_muller(x[lane & 2], x[(lane & 2) + 1], a, b, &even, &odd);
  return (lane & 1) ? odd : even;
}

/// Stream v2's float normal element `index`, before rounding to the dtype (for tests and references).
VOLT_HD float normal16_float_element(uint64_t seed, uint64_t key, uint64_t index, float mean, float stddev) {
  uint32_t x[4];
  stream_block(seed, key, index / 8, x);
  float even, odd;
  box_muller16(x[(index % 8) / 2], mean, stddev, &even, &odd);
  return (index & 1) ? odd : even;
}

/// [0, 1) with 53 random bits from words (lo, hi).
VOLT_HD double unit_double(uint32_t lo, uint32_t hi) {
  return static_cast<double>(((static_cast<uint64_t>(hi) << 32) | lo) >> 11) * kTwoPowMinus53;
}

/// (0, 1] with 53 random bits.
VOLT_HD double unit_double_open_zero(uint32_t lo, uint32_t hi) {
  return static_cast<double>((((static_cast<uint64_t>(hi) << 32) | lo) >> 11) + 1u) * kTwoPowMinus53;
}

/// float64 element `index`: block index/2; uniform from words (0, 1) for even elements, (2, 3) for odd.
VOLT_HD double uniform_double(uint64_t seed, uint64_t key, uint64_t index, double low, double range) {
  uint32_t x[4];
  stream_block(seed, key, index / 2, x);
  const int pair = static_cast<int>(index % 2) * 2;
  return fma(unit_double(x[pair], x[pair + 1]), range, low);
}

/// float64 normal element `index`: Box–Muller on u1 = words (0, 1), u2 = words (2, 3) of block index/2;
/// even elements take the cosine. Uses the platform's double log/sqrt/sin/cos (float64 init is rare),
/// so unlike the other dtypes it may differ in the last bit between libms (glibc vs CUDA).
VOLT_HD double normal_double(uint64_t seed, uint64_t key, uint64_t index, double mean, double stddev) {
  uint32_t x[4];
  stream_block(seed, key, index / 2, x);
  const double radius = sqrt(-2.0 * log(unit_double_open_zero(x[0], x[1])));
  const double angle = 6.283185307179586477 * unit_double(x[2], x[3]);
  return fma(radius * (index % 2 ? sin(angle) : cos(angle)), stddev, mean);
}

}  // namespace volt::detail::philox

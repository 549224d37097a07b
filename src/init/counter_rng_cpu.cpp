// CPU kernels of the counter-based generator. Work goes in batches of kBlocks Philox blocks whose words
// sit in plain arrays, one array per word (structure of arrays), so that the float math of philox.h,
// written for one element, vectorizes across blocks. Every kernel is compiled twice, for AVX2+FMA and
// for baseline x86-64, and picked at run time; both compute the same IEEE operations in the same order
// (explicit fma, no contraction, no fast-math), so they give the same bits. Only the Philox rounds of the
// AVX2 version are written with intrinsics: they are integer operations, exact however they are done.
#include "counter_rng_kernels.h"

#include "philox.h"

#if defined(__x86_64__) || defined(__i386__)
#define VOLT_X86 1
#include <immintrin.h>
#else
#define VOLT_X86 0  // the portable kernels only
#endif

#include <algorithm>
#include <cstring>
#include <type_traits>

namespace volt::detail {
namespace {

namespace px = philox;

// Philox blocks per batch. Each step of the math runs over the whole batch before the next, so that
// many independent vectors are in flight: one vector's chain of dependent fmas (the log's polynomial,
// the Philox rounds) is long, and a CPU core only reorders so far.
constexpr int kBlocks = 64;
constexpr int kBatch = 4 * kBlocks;  // elements per batch
static_assert((kBlocks & (kBlocks - 1)) == 0, "a batch's blocks must share the high word of their index");

#define VOLT_INLINE inline __attribute__((always_inline))

// The words of a batch's kBlocks blocks, one section per word, in the order (0, 2, 1, 3): word k of
// block i is w[kSection[k] * kBlocks + i]. So Box–Muller's radius words (0, 2) are the first half and
// its angle words (1, 3) the second, and one loop runs over all pairs.
constexpr int kSection[4] = {0, 2, 1, 3};

struct alignas(32) Words {
  uint32_t w[4 * kBlocks];
};

VOLT_INLINE void philox_portable(uint64_t seed, uint64_t key, uint64_t first_block, Words& out) {
  for (int i = 0; i < kBlocks; ++i) {
    uint32_t x[4];
    px::stream_block(seed, key, first_block + static_cast<uint64_t>(i), x);
    for (int word = 0; word < 4; ++word) out.w[kSection[word] * kBlocks + i] = x[word];
  }
}

#if VOLT_X86
#define VOLT_AVX2 __attribute__((target("avx2,fma")))

struct RoundKeys {
  uint32_t k0[px::kRounds], k1[px::kRounds];
};

RoundKeys round_keys(uint64_t seed) {
  RoundKeys keys;
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int round = 0; round < px::kRounds; ++round, k0 += px::kW0, k1 += px::kW1) {
    keys.k0[round] = k0;
    keys.k1[round] = k1;
  }
  return keys;
}

// philox.h's rounds on AVX2, eight blocks per vector (GCC does not vectorize the 32x32->64-bit multiply
// well). vpmuludq multiplies the even lanes; the odd lanes go through a second one after a shift, and
// vpmulld gives the low halves directly. Two vectors per word go through the rounds together, which
// hides the multiplies' latency without running out of registers.
VOLT_AVX2 VOLT_INLINE __m256i mul_hi(__m256i x, __m256i m) {
  const __m256i even = _mm256_mul_epu32(x, m), odd = _mm256_mul_epu32(_mm256_srli_epi64(x, 32), m);
  return _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xaa);
}

struct RoundKeyVectors {
  __m256i k0[px::kRounds], k1[px::kRounds];
};

VOLT_AVX2 VOLT_INLINE RoundKeyVectors broadcast(const RoundKeys& keys) {
  RoundKeyVectors vectors;
  for (int round = 0; round < px::kRounds; ++round) {
    vectors.k0[round] = _mm256_set1_epi32(static_cast<int>(keys.k0[round]));
    vectors.k1[round] = _mm256_set1_epi32(static_cast<int>(keys.k1[round]));
  }
  return vectors;
}

VOLT_AVX2 VOLT_INLINE void philox_avx2(const RoundKeyVectors& keys, uint64_t key, uint64_t first_block,
                                       Words& out) {
  constexpr int kVectors = 2;
  const __m256i m0 = _mm256_set1_epi32(static_cast<int>(px::kM0));
  const __m256i m1 = _mm256_set1_epi32(static_cast<int>(px::kM1));
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  for (int g = 0; g < kBlocks; g += 8 * kVectors) {
    __m256i c0[kVectors], c1[kVectors], c2[kVectors], c3[kVectors];
    for (int v = 0; v < kVectors; ++v) {
      // Batches start at multiples of kBlocks, a power of two, so the blocks of one batch share the high
      // word of their index.
      const uint64_t base = first_block + static_cast<uint64_t>(g + 8 * v);
      c0[v] = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(base))), lane);
      c1[v] = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(base >> 32)));
      c2[v] = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(key)));
      c3[v] = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(key >> 32)));
    }
#pragma GCC unroll 10
    for (int round = 0; round < px::kRounds; ++round) {
      for (int v = 0; v < kVectors; ++v) {
        const __m256i hi0 = mul_hi(c0[v], m0), hi1 = mul_hi(c2[v], m1);
        const __m256i lo0 = _mm256_mullo_epi32(c0[v], m0), lo1 = _mm256_mullo_epi32(c2[v], m1);
        // The key goes in first, off the multiplies' critical path (the empty asm keeps GCC from
        // reassociating the xors back onto it).
        __m256i c1_key = _mm256_xor_si256(c1[v], keys.k0[round]),
                c3_key = _mm256_xor_si256(c3[v], keys.k1[round]);
        asm("" : "+x"(c1_key), "+x"(c3_key));
        c0[v] = _mm256_xor_si256(hi1, c1_key);
        c2[v] = _mm256_xor_si256(hi0, c3_key);
        c1[v] = lo1;
        c3[v] = lo0;
      }
    }
    for (int v = 0; v < kVectors; ++v) {
      const int block = g + 8 * v;
      _mm256_store_si256(reinterpret_cast<__m256i*>(&out.w[kSection[0] * kBlocks + block]), c0[v]);
      _mm256_store_si256(reinterpret_cast<__m256i*>(&out.w[kSection[1] * kBlocks + block]), c1[v]);
      _mm256_store_si256(reinterpret_cast<__m256i*>(&out.w[kSection[2] * kBlocks + block]), c2[v]);
      _mm256_store_si256(reinterpret_cast<__m256i*>(&out.w[kSection[3] * kBlocks + block]), c3[v]);
    }
  }
}

#endif  // VOLT_X86

// The float values of a batch, laid out as Words.
struct alignas(32) Values {
  float v[4 * kBlocks];
};

VOLT_INLINE void uniform_values(const Words& words, float low, float range, Values& out) {
  for (int i = 0; i < 4 * kBlocks; ++i) out.v[i] = px::uniform_float(words.w[i], low, range);
}

// Two passes, the radii and then the angles, rather than one: each pass's dependency chain is shorter,
// so more of its vector iterations overlap in the core.
VOLT_INLINE void normal_values(const Words& words, float mean, float stddev, Values& out) {
  constexpr int kPairs = 2 * kBlocks;
  float* radius = out.v;  // the even values overwrite the radii they are computed from
  for (int i = 0; i < kPairs; ++i) radius[i] = px::box_muller_radius(words.w[i]);
  for (int i = 0; i < kPairs; ++i)
    px::box_muller_values(radius[i], words.w[kPairs + i], mean, stddev, &out.v[i], &out.v[kPairs + i]);
}

// Element 4 i + k of the batch is word k's value of block i.
VOLT_INLINE void store(const Values& values, float* out) {
  for (int i = 0; i < kBlocks; ++i)
    for (int word = 0; word < 4; ++word) out[4 * i + word] = values.v[kSection[word] * kBlocks + i];
}

// A 32-bit word at any 16-bit boundary (a slice can start at any element), aliasing the 16-bit elements.
typedef uint32_t PairOfHalves __attribute__((aligned(2), may_alias));

template <uint32_t (*kConvert)(float)>
VOLT_INLINE void store(const Values& values, uint16_t* out) {
  // Two 16-bit elements per 32-bit word keep the interleaving to 32-bit shuffles.
  auto* out32 = reinterpret_cast<PairOfHalves*>(out);
  const float* v = values.v;
  for (int i = 0; i < kBlocks; ++i) {
    out32[2 * i] = kConvert(v[kSection[0] * kBlocks + i]) | kConvert(v[kSection[1] * kBlocks + i]) << 16;
    out32[2 * i + 1] = kConvert(v[kSection[2] * kBlocks + i]) | kConvert(v[kSection[3] * kBlocks + i]) << 16;
  }
}

template <RawDtype kDtype>
using Element = std::conditional_t<kDtype == RawDtype::kFloat32, float, uint16_t>;

// The values of one batch from its words, stored in element order.
template <bool kNormal, RawDtype kDtype>
VOLT_INLINE void finish_batch(const Words& words, float a, float b, Element<kDtype>* out) {
  Values values;
  if constexpr (kNormal)
    normal_values(words, a, b, values);
  else
    uniform_values(words, a, b, values);
  if constexpr (kDtype == RawDtype::kFloat32)
    store(values, out);
  else if constexpr (kDtype == RawDtype::kBFloat16)
    store<px::bfloat16_bits>(values, out);
  else
    store<px::half_bits>(values, out);
}

// Whole batches [first_batch, first_batch + batches) into out. The two versions differ only in how they
// run the Philox rounds; finish_batch is inlined into each and compiled for its target.
using BatchesFn = void (*)(void* out, uint64_t seed, uint64_t key, uint64_t first_batch, int64_t batches,
                           float a, float b);

#if VOLT_X86
template <bool kNormal, RawDtype kDtype>
VOLT_AVX2 void batches_avx2(void* out, uint64_t seed, uint64_t key, uint64_t first_batch, int64_t batches,
                            float a, float b) {
  const RoundKeyVectors keys = broadcast(round_keys(seed));
  auto* typed_out = static_cast<Element<kDtype>*>(out);
  for (int64_t batch = 0; batch < batches; ++batch) {
    Words words;
    philox_avx2(keys, key, (first_batch + static_cast<uint64_t>(batch)) * kBlocks, words);
    finish_batch<kNormal, kDtype>(words, a, b, typed_out + batch * kBatch);
  }
}
#endif  // VOLT_X86

template <bool kNormal, RawDtype kDtype>
void batches_portable(void* out, uint64_t seed, uint64_t key, uint64_t first_batch, int64_t batches, float a,
                      float b) {
  auto* typed_out = static_cast<Element<kDtype>*>(out);
  for (int64_t batch = 0; batch < batches; ++batch) {
    Words words;
    philox_portable(seed, key, (first_batch + static_cast<uint64_t>(batch)) * kBlocks, words);
    finish_batch<kNormal, kDtype>(words, a, b, typed_out + batch * kBatch);
  }
}

template <bool kNormal>
BatchesFn batches_function(RawDtype dtype, bool avx2) {
#if VOLT_X86
  if (avx2) {
    switch (dtype) {
      case RawDtype::kFloat32:
        return batches_avx2<kNormal, RawDtype::kFloat32>;
      case RawDtype::kFloat16:
        return batches_avx2<kNormal, RawDtype::kFloat16>;
      default:
        return batches_avx2<kNormal, RawDtype::kBFloat16>;
    }
  }
#else
  (void)avx2;
#endif
  switch (dtype) {
    case RawDtype::kFloat32:
      return batches_portable<kNormal, RawDtype::kFloat32>;
    case RawDtype::kFloat16:
      return batches_portable<kNormal, RawDtype::kFloat16>;
    default:
      return batches_portable<kNormal, RawDtype::kBFloat16>;
  }
}

bool cpu_has_avx2_fma() {
#if VOLT_X86
  static const bool supported = [] {
    __builtin_cpu_init();  // in case the first fill runs in a static initializer, before libgcc's
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return supported;
#else
  return false;
#endif
}

// Elements [first, first + n) of a float32/float16/bfloat16 stream: whole batches straight into `out`,
// a partial batch at either end computed whole into a scratch batch and cut.
void fill_float(BatchesFn batches, void* out, RawDtype dtype, int64_t n, uint64_t seed, uint64_t key,
                int64_t first, float a, float b) {
  const int64_t item = dtype == RawDtype::kFloat32 ? 4 : 2;
  auto* bytes = static_cast<unsigned char*>(out);
  alignas(32) unsigned char scratch[kBatch * 4];
  auto partial = [&](int64_t element, int64_t count) {  // within one batch
    batches(scratch, seed, key, static_cast<uint64_t>(element / kBatch), 1, a, b);
    std::memcpy(bytes + (element - first) * item, scratch + (element % kBatch) * item,
                static_cast<size_t>(count * item));
  };
  int64_t element = first;
  const int64_t end = first + n;
  if (element % kBatch != 0) {
    const int64_t count = std::min(end, (element / kBatch + 1) * kBatch) - element;
    partial(element, count);
    element += count;
  }
  const int64_t whole = (end - element) / kBatch;
  if (whole > 0) {
    batches(bytes + (element - first) * item, seed, key, static_cast<uint64_t>(element / kBatch), whole, a,
            b);
    element += whole * kBatch;
  }
  if (element < end) partial(element, end - element);
}

// float64: one element at a time through philox.h (float64 init is rare).
void fill_double(bool normal, double* out, int64_t n, uint64_t seed, uint64_t key, int64_t first, double a,
                 double b) {
  for (int64_t i = 0; i < n; ++i) {
    const auto index = static_cast<uint64_t>(first + i);
    out[i] = normal ? px::normal_double(seed, key, index, a, b) : px::uniform_double(seed, key, index, a, b);
  }
}

void fill(bool normal, bool allow_avx2, void* out, RawDtype dtype, int64_t n, uint64_t seed, uint64_t key,
          int64_t first, double a, double b) {
  if (n <= 0) return;
  if (dtype == RawDtype::kFloat64)
    return fill_double(normal, static_cast<double*>(out), n, seed, key, first, a, b);
  const bool avx2 = allow_avx2 && cpu_has_avx2_fma();
  const BatchesFn batches =
      normal ? batches_function<true>(dtype, avx2) : batches_function<false>(dtype, avx2);
  fill_float(batches, out, dtype, n, seed, key, first, static_cast<float>(a), static_cast<float>(b));
}

}  // namespace

void cpu_uniform_fill(void* out, RawDtype dtype, int64_t n, uint64_t seed, uint64_t key, int64_t first,
                      double low, double range) {
  fill(/*normal=*/false, /*allow_avx2=*/true, out, dtype, n, seed, key, first, low, range);
}

void cpu_normal_fill(void* out, RawDtype dtype, int64_t n, uint64_t seed, uint64_t key, int64_t first,
                     double mean, double std) {
  fill(/*normal=*/true, /*allow_avx2=*/true, out, dtype, n, seed, key, first, mean, std);
}

void cpu_fill_float_baseline(bool normal, void* out, RawDtype dtype, int64_t n, uint64_t seed, uint64_t key,
                             int64_t first, float a, float b) {
  fill(normal, /*allow_avx2=*/false, out, dtype, n, seed, key, first, a, b);
}

}  // namespace volt::detail

// CPU kernels of the counter-based generator. Work goes in batches of kBlocks Philox blocks whose words
// sit in plain arrays, one array per word (structure of arrays), so that the float math of philox.h,
// written for one element, vectorizes across blocks. Every kernel is compiled for each CpuKernel's
// instruction set (baseline x86-64, AVX2+FMA, AVX-512 F/BW/DQ/VL, and that with AVX512_BF16) and the
// best one the CPU has is picked at run time; all compute the same IEEE operations in the same order
// (explicit fma, no contraction, no fast-math), so they give the same bits. Only integer work is written
// with intrinsics (the Philox rounds, which are exact however they are done, and the interleaving
// stores), plus AVX512_BF16's conversion, whose rounding is philox.h's for every value it is used on.
#include "counter_rng_kernels.h"

#include "philox.h"

#if defined(__x86_64__) || defined(__i386__)
#define VOLT_X86 1
#include <immintrin.h>
// GCC 12's AVX-512 intrinsics start from _mm512_undefined_epi32(), a self-initialized variable that
// -Wmaybe-uninitialized reports wherever they are inlined (GCC bug 105593).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
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
constexpr int kMaxBatch = 8 * kBlocks;  // elements per batch: 4 per block, or 8 (stream v2)
static_assert((kBlocks & (kBlocks - 1)) == 0, "a batch's blocks must share the high word of their index");

#define VOLT_INLINE inline __attribute__((always_inline))

// The words of a batch's kBlocks blocks, one section per word, in the order (0, 2, 1, 3): word k of
// block i is w[kSection[k] * kBlocks + i]. So Box–Muller's radius words (0, 2) are the first half and
// its angle words (1, 3) the second, and one loop runs over all pairs.
constexpr int kSection[4] = {0, 2, 1, 3};

// Stream v2 makes a whole pair from each word, so its words stay in stream order instead (word k of
// block i at w[4 i + k]): its values then come out in element order, with nothing to interleave.
enum class Layout { kSections, kStreamOrder };

struct alignas(64) Words {
  uint32_t w[4 * kBlocks];
};

template <Layout kLayout>
VOLT_INLINE void philox_portable(uint64_t seed, uint64_t key, uint64_t first_block, Words& out) {
  for (int i = 0; i < kBlocks; ++i) {
    uint32_t x[4];
    px::stream_block(seed, key, first_block + static_cast<uint64_t>(i), x);
    for (int word = 0; word < 4; ++word)
      out.w[kLayout == Layout::kSections ? kSection[word] * kBlocks + i : 4 * i + word] = x[word];
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

template <Layout kLayout>
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
      if constexpr (kLayout == Layout::kSections) {
        _mm256_store_si256(reinterpret_cast<__m256i*>(&out.w[kSection[0] * kBlocks + block]), c0[v]);
        _mm256_store_si256(reinterpret_cast<__m256i*>(&out.w[kSection[1] * kBlocks + block]), c1[v]);
        _mm256_store_si256(reinterpret_cast<__m256i*>(&out.w[kSection[2] * kBlocks + block]), c2[v]);
        _mm256_store_si256(reinterpret_cast<__m256i*>(&out.w[kSection[3] * kBlocks + block]), c3[v]);
      } else {  // a 4x8 transpose: within each 128-bit lane first, then the lanes
        const __m256i t0 = _mm256_unpacklo_epi32(c0[v], c1[v]), t1 = _mm256_unpackhi_epi32(c0[v], c1[v]);
        const __m256i t2 = _mm256_unpacklo_epi32(c2[v], c3[v]), t3 = _mm256_unpackhi_epi32(c2[v], c3[v]);
        const __m256i r0 = _mm256_unpacklo_epi64(t0, t2),
                      r1 = _mm256_unpackhi_epi64(t0, t2);  // blocks 0|4, 1|5
        const __m256i r2 = _mm256_unpacklo_epi64(t1, t3),
                      r3 = _mm256_unpackhi_epi64(t1, t3);  // blocks 2|6, 3|7
        auto* to = reinterpret_cast<__m256i*>(&out.w[4 * block]);
        _mm256_store_si256(to, _mm256_permute2x128_si256(r0, r1, 0x20));
        _mm256_store_si256(to + 1, _mm256_permute2x128_si256(r2, r3, 0x20));
        _mm256_store_si256(to + 2, _mm256_permute2x128_si256(r0, r1, 0x31));
        _mm256_store_si256(to + 3, _mm256_permute2x128_si256(r2, r3, 0x31));
      }
    }
  }
}

// The same rounds on AVX-512, one block per 64-bit lane: vpmuludq then gives each block's whole 64-bit
// product, whose high half is one shift away and whose low half is already in place (the high half of a
// lane is never read: vpmuludq reads the low halves only, and the xors keep them apart). With vpternlogd
// doing both xors of a round, a round costs six instructions per eight blocks where the 32-bit-lane
// layout of AVX2 needs eight. Four vectors of eight blocks per word go through the rounds together.
#define VOLT_AVX512 \
  __attribute__((target("avx2,fma,avx512f,avx512bw,avx512dq,avx512vl,prefer-vector-width=512")))
#define VOLT_AVX512_BF16 \
  __attribute__((target("avx2,fma,avx512f,avx512bw,avx512dq,avx512vl,avx512bf16,prefer-vector-width=512")))

struct RoundKeyVectors512 {
  __m512i k0[px::kRounds], k1[px::kRounds];
};

VOLT_AVX512 VOLT_INLINE RoundKeyVectors512 broadcast512(const RoundKeys& keys) {
  RoundKeyVectors512 vectors;
  for (int round = 0; round < px::kRounds; ++round) {
    vectors.k0[round] = _mm512_set1_epi32(static_cast<int>(keys.k0[round]));
    vectors.k1[round] = _mm512_set1_epi32(static_cast<int>(keys.k1[round]));
  }
  return vectors;
}

template <Layout kLayout>
VOLT_AVX512 VOLT_INLINE void philox_avx512(const RoundKeyVectors512& keys, uint64_t key, uint64_t first_block,
                                           Words& out) {
  constexpr int kVectors = 4;  // of eight blocks each
  const __m512i m0 = _mm512_set1_epi64(px::kM0), m1 = _mm512_set1_epi64(px::kM1);
  const __m512i lane = _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7);
  // The low halves of two vectors' lanes, in order: sixteen blocks' words.
  const __m512i low_halves = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  for (int g = 0; g < kBlocks; g += 8 * kVectors) {
    __m512i c0[kVectors], c1[kVectors], c2[kVectors], c3[kVectors];
    for (int v = 0; v < kVectors; ++v) {
      const uint64_t base =
          first_block + static_cast<uint64_t>(g + 8 * v);  // same high word (see philox_avx2)
      c0[v] = _mm512_add_epi64(_mm512_set1_epi64(static_cast<uint32_t>(base)), lane);
      c1[v] = _mm512_set1_epi64(static_cast<uint32_t>(base >> 32));
      c2[v] = _mm512_set1_epi64(static_cast<uint32_t>(key));
      c3[v] = _mm512_set1_epi64(static_cast<uint32_t>(key >> 32));
    }
#pragma GCC unroll 10
    for (int round = 0; round < px::kRounds; ++round) {
      for (int v = 0; v < kVectors; ++v) {
        const __m512i product0 = _mm512_mul_epu32(c0[v], m0), product1 = _mm512_mul_epu32(c2[v], m1);
        c0[v] = _mm512_ternarylogic_epi32(_mm512_srli_epi64(product1, 32), c1[v], keys.k0[round], 0x96);
        c2[v] = _mm512_ternarylogic_epi32(_mm512_srli_epi64(product0, 32), c3[v], keys.k1[round], 0x96);
        c1[v] = product1;
        c3[v] = product0;
      }
    }
    if constexpr (kLayout == Layout::kSections) {
      for (int v = 0; v < kVectors; v += 2) {
        const int block = g + 8 * v;
        const __m512i* words[4] = {c0, c1, c2, c3};
        for (int word = 0; word < 4; ++word)
          _mm512_store_si512(&out.w[kSection[word] * kBlocks + block],
                             _mm512_permutex2var_epi32(words[word][v], low_halves, words[word][v + 1]));
      }
    } else {
      // Words 0 and 1 of each block into one 64-bit lane, 2 and 3 into another, then those lanes
      // interleaved: four blocks' words in order per vector.
      const __m512i first4 = _mm512_setr_epi64(0, 8, 1, 9, 2, 10, 3, 11);
      const __m512i last4 = _mm512_setr_epi64(4, 12, 5, 13, 6, 14, 7, 15);
      for (int v = 0; v < kVectors; ++v) {
        const __m512i c01 = _mm512_mask_blend_epi32(0xaaaa, c0[v], _mm512_slli_epi64(c1[v], 32));
        const __m512i c23 = _mm512_mask_blend_epi32(0xaaaa, c2[v], _mm512_slli_epi64(c3[v], 32));
        uint32_t* to = &out.w[4 * (g + 8 * v)];
        _mm512_store_si512(to, _mm512_permutex2var_epi64(c01, first4, c23));
        _mm512_store_si512(to + 16, _mm512_permutex2var_epi64(c01, last4, c23));
      }
    }
  }
}

#endif  // VOLT_X86

// The float values of a batch, laid out as Words.
struct alignas(64) Values {
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

// Stream v2's values of a batch: the cosine (even) and sine (odd) value of each word's pair, words in
// stream order.
struct alignas(64) PairValues {
  float even[4 * kBlocks], odd[4 * kBlocks];
};

VOLT_INLINE void normal16_values(const Words& words, float mean, float stddev, PairValues& out) {
  constexpr int kWords = 4 * kBlocks;
  for (int i = 0; i < kWords; ++i) out.even[i] = px::box_muller16_radius(words.w[i]);
  for (int i = 0; i < kWords; ++i)
    px::box_muller_values(out.even[i], words.w[i] & 0xffff0000u, mean, stddev, &out.even[i], &out.odd[i]);
}

VOLT_INLINE void store(const PairValues& values, float* out) {
  for (int i = 0; i < 4 * kBlocks; ++i) {
    out[2 * i] = values.even[i];
    out[2 * i + 1] = values.odd[i];
  }
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

template <uint32_t (*kConvert)(float)>
VOLT_INLINE void store(const PairValues& values, uint16_t* out) {
  auto* out32 = reinterpret_cast<PairOfHalves*>(out);
  for (int i = 0; i < 4 * kBlocks; ++i) out32[i] = kConvert(values.even[i]) | kConvert(values.odd[i]) << 16;
}

template <RawDtype kDtype>
using Element = std::conditional_t<kDtype == RawDtype::kFloat32, float, uint16_t>;

// Per distribution: how the batch's words are laid out, what holds its values, how many elements it has.
template <Distribution kDistribution>
struct Batch {
  static constexpr bool kPairs = kDistribution == Distribution::kNormal16;
  static constexpr Layout kLayout = kPairs ? Layout::kStreamOrder : Layout::kSections;
  static constexpr int kElements = kPairs ? 8 * kBlocks : 4 * kBlocks;
  using ValuesType = std::conditional_t<kPairs, PairValues, Values>;
};

template <Distribution kDistribution>
VOLT_INLINE void batch_values(const Words& words, float a, float b,
                              typename Batch<kDistribution>::ValuesType& values) {
  if constexpr (kDistribution == Distribution::kNormal16)
    normal16_values(words, a, b, values);
  else if constexpr (kDistribution == Distribution::kNormal24)
    normal_values(words, a, b, values);
  else
    uniform_values(words, a, b, values);
}

template <RawDtype kDtype, class ValuesType>
VOLT_INLINE void store_values(const ValuesType& values, Element<kDtype>* out) {
  if constexpr (kDtype == RawDtype::kFloat32)
    store(values, out);
  else if constexpr (kDtype == RawDtype::kBFloat16)
    store<px::bfloat16_bits>(values, out);
  else
    store<px::half_bits>(values, out);
}

// Whole batches [first_batch, first_batch + batches) into out. The versions differ in how they run the
// Philox rounds and, with AVX512_BF16, in how they round to bfloat16; the float math is inlined into each
// and compiled for its target.
using BatchesFn = void (*)(void* out, uint64_t seed, uint64_t key, uint64_t first_batch, int64_t batches,
                           float a, float b);

// Whole batches [first_batch, first_batch + batches) into out. The versions differ in how they run the
// Philox rounds and, with AVX512_BF16, in how they round to bfloat16; the float math is inlined into each
// and compiled for its target (each writes the loop out: GCC inlines nothing with a wider target into a
// shared helper).
#define VOLT_BATCH_LOOP(philox_call, store_call)                                         \
  using B = Batch<kDistribution>;                                                        \
  auto* typed_out = static_cast<Element<kDtype>*>(out);                                  \
  for (int64_t batch = 0; batch < batches; ++batch) {                                    \
    Words words;                                                                         \
    typename B::ValuesType values;                                                       \
    const uint64_t first_block = (first_batch + static_cast<uint64_t>(batch)) * kBlocks; \
    philox_call;                                                                         \
    batch_values<kDistribution>(words, a, b, values);                                    \
    store_call;                                                                          \
  }

template <Distribution kDistribution, RawDtype kDtype>
void batches_portable(void* out, uint64_t seed, uint64_t key, uint64_t first_batch, int64_t batches, float a,
                      float b) {
  VOLT_BATCH_LOOP(philox_portable<B::kLayout>(seed, key, first_block, words),
                  store_values<kDtype>(values, typed_out + batch * B::kElements))
}

#if VOLT_X86
template <Distribution kDistribution, RawDtype kDtype>
VOLT_AVX2 void batches_avx2(void* out, uint64_t seed, uint64_t key, uint64_t first_batch, int64_t batches,
                            float a, float b) {
  const RoundKeyVectors keys = broadcast(round_keys(seed));
  VOLT_BATCH_LOOP(philox_avx2<B::kLayout>(keys, key, first_block, words),
                  store_values<kDtype>(values, typed_out + batch * B::kElements))
}

template <Distribution kDistribution, RawDtype kDtype>
VOLT_AVX512 void batches_avx512(void* out, uint64_t seed, uint64_t key, uint64_t first_batch, int64_t batches,
                                float a, float b) {
  const RoundKeyVectors512 keys = broadcast512(round_keys(seed));
  VOLT_BATCH_LOOP(philox_avx512<B::kLayout>(keys, key, first_block, words),
                  store_values<kDtype>(values, typed_out + batch * B::kElements))
}

// Output halves 4 j + k of a group of eight blocks are word k of block j: their positions in the two
// vectors of converted words (the first holds words 0 and 1 of sixteen blocks, the second words 2 and 3).
struct alignas(64) InterleaveIndices {
  uint16_t first[32], second[32];
};
constexpr InterleaveIndices kInterleave = [] {
  InterleaveIndices indices{};
  for (int j = 0; j < 8; ++j)
    for (int k = 0; k < 4; ++k) {
      indices.first[4 * j + k] = static_cast<uint16_t>(16 * k + j);
      indices.second[4 * j + k] = static_cast<uint16_t>(16 * k + j + 8);
    }
  return indices;
}();

// bfloat16 stores with AVX512_BF16's vcvtne2ps2bf16, which rounds to nearest even as philox.h does for
// every normal, zero or infinite float; it flushes subnormals to zero and keeps NaN payloads, so the rare
// group of blocks holding either goes through philox.h's conversion instead.
VOLT_AVX512_BF16 VOLT_INLINE void store_bfloat16_native(const Values& values, uint16_t* out) {
  const float* v = values.v;
  const __m512i first = _mm512_load_si512(kInterleave.first), second = _mm512_load_si512(kInterleave.second);
  constexpr int kNanOrSubnormal = 0x01 | 0x20 | 0x80;  // quiet NaN, subnormal, signaling NaN
  for (int i = 0; i < kBlocks; i += 16) {
    const __m512 w0 = _mm512_load_ps(v + kSection[0] * kBlocks + i);
    const __m512 w1 = _mm512_load_ps(v + kSection[1] * kBlocks + i);
    const __m512 w2 = _mm512_load_ps(v + kSection[2] * kBlocks + i);
    const __m512 w3 = _mm512_load_ps(v + kSection[3] * kBlocks + i);
    const __mmask16 special =
        _mm512_fpclass_ps_mask(w0, kNanOrSubnormal) | _mm512_fpclass_ps_mask(w1, kNanOrSubnormal) |
        _mm512_fpclass_ps_mask(w2, kNanOrSubnormal) | _mm512_fpclass_ps_mask(w3, kNanOrSubnormal);
    if (__builtin_expect(special != 0, 0)) {
      for (int block = i; block < i + 16; ++block)
        for (int word = 0; word < 4; ++word)
          out[4 * block + word] = px::to_bfloat16(v[kSection[word] * kBlocks + block]);
      continue;
    }
    const auto low = reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(w1, w0));
    const auto high = reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(w3, w2));
    _mm512_storeu_si512(out + 4 * i, _mm512_permutex2var_epi16(low, first, high));
    _mm512_storeu_si512(out + 4 * i + 32, _mm512_permutex2var_epi16(low, second, high));
  }
}

// Stream v2's pairs: vcvtne2ps2bf16 puts sixteen even values and then sixteen odd ones in a vector,
// one permutation interleaves them; specials as above.
VOLT_AVX512_BF16 VOLT_INLINE void store_bfloat16_native(const PairValues& values, uint16_t* out) {
  alignas(64) static constexpr uint16_t kPairUp[32] = {0,  16, 1,  17, 2,  18, 3,  19, 4,  20, 5,
                                                       21, 6,  22, 7,  23, 8,  24, 9,  25, 10, 26,
                                                       11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
  const __m512i pair_up = _mm512_load_si512(kPairUp);
  constexpr int kNanOrSubnormal = 0x01 | 0x20 | 0x80;
  for (int i = 0; i < 4 * kBlocks; i += 16) {
    const __m512 even = _mm512_load_ps(values.even + i), odd = _mm512_load_ps(values.odd + i);
    if (__builtin_expect((_mm512_fpclass_ps_mask(even, kNanOrSubnormal) |
                          _mm512_fpclass_ps_mask(odd, kNanOrSubnormal)) != 0,
                         0)) {
      for (int j = i; j < i + 16; ++j) {
        out[2 * j] = px::to_bfloat16(values.even[j]);
        out[2 * j + 1] = px::to_bfloat16(values.odd[j]);
      }
      continue;
    }
    const auto halves = reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(odd, even));
    _mm512_storeu_si512(out + 2 * i, _mm512_permutexvar_epi16(pair_up, halves));
  }
}

template <Distribution kDistribution, RawDtype kDtype>
VOLT_AVX512_BF16 void batches_avx512_bf16(void* out, uint64_t seed, uint64_t key, uint64_t first_batch,
                                          int64_t batches, float a, float b) {
  const RoundKeyVectors512 keys = broadcast512(round_keys(seed));
  VOLT_BATCH_LOOP(philox_avx512<B::kLayout>(keys, key, first_block, words), {
    if constexpr (kDtype == RawDtype::kBFloat16)
      store_bfloat16_native(values, typed_out + batch * B::kElements);
    else
      store_values<kDtype>(values, typed_out + batch * B::kElements);
  })
}
#endif  // VOLT_X86

#define VOLT_BATCHES_FUNCTION(name)                      \
  template <Distribution kDistribution>                  \
  BatchesFn name##_function(RawDtype dtype) {            \
    switch (dtype) {                                     \
      case RawDtype::kFloat32:                           \
        return name<kDistribution, RawDtype::kFloat32>;  \
      case RawDtype::kFloat16:                           \
        return name<kDistribution, RawDtype::kFloat16>;  \
      default:                                           \
        return name<kDistribution, RawDtype::kBFloat16>; \
    }                                                    \
  }

VOLT_BATCHES_FUNCTION(batches_portable)
#if VOLT_X86
VOLT_BATCHES_FUNCTION(batches_avx2)
VOLT_BATCHES_FUNCTION(batches_avx512)
VOLT_BATCHES_FUNCTION(batches_avx512_bf16)
#endif
#undef VOLT_BATCHES_FUNCTION
#undef VOLT_BATCH_LOOP

template <Distribution kDistribution>
BatchesFn batches_function(CpuKernel kernel, RawDtype dtype) {
  switch (kernel) {
#if VOLT_X86
    case CpuKernel::kAvx512Bf16:
      return batches_avx512_bf16_function<kDistribution>(dtype);
    case CpuKernel::kAvx512:
      return batches_avx512_function<kDistribution>(dtype);
    case CpuKernel::kAvx2:
      return batches_avx2_function<kDistribution>(dtype);
#endif
    default:
      return batches_portable_function<kDistribution>(dtype);
  }
}

BatchesFn batches_function(CpuKernel kernel, Distribution distribution, RawDtype dtype) {
  switch (distribution) {
    case Distribution::kNormal16:
      return batches_function<Distribution::kNormal16>(kernel, dtype);
    case Distribution::kNormal24:
      return batches_function<Distribution::kNormal24>(kernel, dtype);
    default:
      return batches_function<Distribution::kUniform>(kernel, dtype);
  }
}

// Elements [first, first + n) of a float32/float16/bfloat16 stream: whole batches straight into `out`,
// a partial batch at either end computed whole into a scratch batch and cut.
void fill_float(BatchesFn batches, int64_t batch, void* out, RawDtype dtype, int64_t n, uint64_t seed,
                uint64_t key, int64_t first, float a, float b) {
  const int64_t item = dtype == RawDtype::kFloat32 ? 4 : 2;
  auto* bytes = static_cast<unsigned char*>(out);
  alignas(64) unsigned char scratch[kMaxBatch * 4];
  auto partial = [&](int64_t element, int64_t count) {  // within one batch
    batches(scratch, seed, key, static_cast<uint64_t>(element / batch), 1, a, b);
    std::memcpy(bytes + (element - first) * item, scratch + (element % batch) * item,
                static_cast<size_t>(count * item));
  };
  int64_t element = first;
  const int64_t end = first + n;
  if (element % batch != 0) {
    const int64_t count = std::min(end, (element / batch + 1) * batch) - element;
    partial(element, count);
    element += count;
  }
  const int64_t whole = (end - element) / batch;
  if (whole > 0) {
    batches(bytes + (element - first) * item, seed, key, static_cast<uint64_t>(element / batch), whole, a, b);
    element += whole * batch;
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

}  // namespace

const char* cpu_kernel_name(CpuKernel kernel) {
  switch (kernel) {
    case CpuKernel::kAvx512Bf16:
      return "avx512bf16";
    case CpuKernel::kAvx512:
      return "avx512";
    case CpuKernel::kAvx2:
      return "avx2";
    default:
      return "x86-64";
  }
}

bool cpu_kernel_supported(CpuKernel kernel) {
#if VOLT_X86
  static const int best = [] {
    __builtin_cpu_init();  // in case the first fill runs in a static initializer, before libgcc's
    if (!(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")))
      return static_cast<int>(CpuKernel::kBaseline);
    if (!(__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
          __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl")))
      return static_cast<int>(CpuKernel::kAvx2);
    if (!__builtin_cpu_supports("avx512bf16")) return static_cast<int>(CpuKernel::kAvx512);
    return static_cast<int>(CpuKernel::kAvx512Bf16);
  }();
  return static_cast<int>(kernel) <= best;
#else
  return kernel == CpuKernel::kBaseline;
#endif
}

void cpu_fill(CpuKernel kernel, Distribution distribution, void* out, RawDtype dtype, int64_t n,
              uint64_t seed, uint64_t key, int64_t first, double a, double b) {
  if (n <= 0) return;
  if (dtype == RawDtype::kFloat64)
    return fill_double(distribution != Distribution::kUniform, static_cast<double*>(out), n, seed, key, first,
                       a, b);
  if (!cpu_kernel_supported(kernel)) kernel = CpuKernel::kBaseline;
  const int64_t batch = distribution == Distribution::kNormal16 ? Batch<Distribution::kNormal16>::kElements
                                                                : Batch<Distribution::kUniform>::kElements;
  fill_float(batches_function(kernel, distribution, dtype), batch, out, dtype, n, seed, key, first,
             static_cast<float>(a), static_cast<float>(b));
}

}  // namespace volt::detail

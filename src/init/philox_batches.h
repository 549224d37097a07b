// The Philox rounds of the CPU kernels (counter_rng_cpu.cpp), one batch of kBlocks blocks at a time into
// plain arrays of words: portable, AVX2 and AVX-512 versions, each giving the same words (Philox is
// integer arithmetic, exact however it is done), in the layout the batch's float math wants. Included by
// counter_rng_cpu.cpp only.
#pragma once

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

#include <cstdint>

namespace volt::detail {
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

inline RoundKeys round_keys(uint64_t seed) {
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

}  // namespace volt::detail

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
#include "philox_batches.h"

#include <algorithm>
#include <cstring>
#include <type_traits>

namespace volt::detail {
namespace {

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

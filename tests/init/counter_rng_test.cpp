#include "volt/init/counter_rng.h"

#include "init/counter_rng_kernels.h"
#include "init/philox.h"
#include "init/philox_reference.h"
#include "volt/error.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace px = volt::detail::philox;
using volt::InitStream;
using volt::RandomKey;
using volt::detail::Distribution;
using volt::detail::RawDtype;
using volt::testing::reference_block;
using volt::testing::reference_philox;

namespace {

constexpr Distribution kDistributions[] = {Distribution::kUniform, Distribution::kNormal24,
                                           Distribution::kNormal16};

// `key` drawing from the stream whose normal values are `d` (uniform values are the same in every one).
RandomKey for_distribution(RandomKey key, Distribution d) {
  key.stream = d == Distribution::kNormal24 ? InitStream::kPhiloxBoxMuller24 : InitStream::kPhiloxBoxMuller16;
  return key;
}

const char* name_of(Distribution d) {
  return d == Distribution::kUniform ? "uniform" : d == Distribution::kNormal24 ? "normal v1" : "normal v2";
}

// philox.h's one-element definition of each distribution's float values.
float defined_element(Distribution d, RandomKey key, uint64_t i, float a, float b) {
  if (d == Distribution::kNormal16) return px::normal16_float_element(key.seed, key.key, i, a, b);
  return px::float_element(d != Distribution::kUniform, key.seed, key.key, i, a, b);
}

const std::vector<c10::ScalarType> kDtypes{torch::kFloat64, torch::kFloat32, torch::kFloat16,
                                           torch::kBFloat16};

// Uniform on [a, a + b) or normal with mean a and standard deviation b.
at::Tensor fill(c10::ScalarType dtype, int64_t n, RandomKey key, bool normal, int64_t first = 0,
                double a = 0.0, double b = 1.0) {
  auto t = torch::empty({n}, torch::TensorOptions().dtype(dtype));
  if (normal)
    volt::fill_normal_slice(t, key, first, a, b);
  else
    volt::fill_uniform_slice(t, key, first, a, a + b);
  return t;
}

// The definitions of counter_rng.h's streams, computed in double where the math is continuous.
float reference_uniform_float(RandomKey key, uint64_t i, float low, float range) {
  const uint32_t word = reference_block(key, i / 4)[i % 4];
  return std::fma(static_cast<float>(word >> 8) * 0x1p-24f, range, low);
}

double reference_normal(RandomKey key, uint64_t i) {
  const auto x = reference_block(key, i / 4);
  const int pair = static_cast<int>(i % 4) / 2;
  const double u1 = ((x[2 * pair] >> 8) + 1.0) * 0x1p-24, u2 = (x[2 * pair + 1] >> 8) * 0x1p-24;
  const double radius = std::sqrt(-2.0 * std::log(u1)), angle = 2.0 * M_PI * u2;
  return radius * (i % 2 == 0 ? std::cos(angle) : std::sin(angle));
}

double unit53(uint32_t lo, uint32_t hi) {
  return static_cast<double>(((static_cast<uint64_t>(hi) << 32) | lo) >> 11) * 0x1p-53;
}

double reference_uniform_double(RandomKey key, uint64_t i, double low, double range) {
  const auto x = reference_block(key, i / 2);
  return std::fma(i % 2 == 0 ? unit53(x[0], x[1]) : unit53(x[2], x[3]), range, low);
}

double reference_normal_double(RandomKey key, uint64_t i, double mean, double stddev) {
  const auto x = reference_block(key, i / 2);
  const double u1 = unit53(x[0], x[1]) + 0x1p-53, u2 = unit53(x[2], x[3]);
  const double radius = std::sqrt(-2.0 * std::log(u1)), angle = 6.283185307179586477 * u2;
  return std::fma(radius * (i % 2 == 0 ? std::cos(angle) : std::sin(angle)), stddev, mean);
}

// Distance in units in the last place of `exact` rounded to float.
double float_ulps(float value, double exact) {
  const double ulp = std::ldexp(1.0, std::ilogb(static_cast<float>(exact)) - 23);
  return std::abs(static_cast<double>(value) - exact) / ulp;
}

double half_value(uint16_t bits, c10::ScalarType dtype) {
  return dtype == torch::kHalf ? static_cast<float>(c10::Half(bits, c10::Half::from_bits()))
                               : static_cast<float>(c10::BFloat16(bits, c10::BFloat16::from_bits()));
}

// The representable neighbours of v in dtype.
std::pair<double, double> neighbours(c10::ScalarType dtype, double v) {
  if (dtype == torch::kFloat64) return {std::nextafter(v, -INFINITY), std::nextafter(v, INFINITY)};
  if (dtype == torch::kFloat32) {
    const auto f = static_cast<float>(v);
    return {std::nextafterf(f, -INFINITY), std::nextafterf(f, INFINITY)};
  }
  // 16-bit: step the sign-magnitude bits as an ordered integer.
  const auto f = static_cast<float>(v);
  const uint16_t bits = dtype == torch::kHalf ? c10::Half(f).x : c10::BFloat16(f).x;
  const int order = (bits & 0x8000) ? -(bits & 0x7fff) : (bits & 0x7fff);
  auto value = [&](int o) { return half_value(static_cast<uint16_t>(o < 0 ? (0x8000 | -o) : o), dtype); };
  return {value(order - 1), value(order + 1)};
}

// Kolmogorov–Smirnov distance between samples and a continuous CDF, each sample value standing for the
// interval of values that round to it. A 16-bit dtype has only a few hundred values per octave, so
// comparing its steps with the continuous CDF at the values themselves would measure the rounding (up
// to half a step times the density: ~0.002 for bfloat16 uniforms, 2x the statistical bound), not the
// generator. Comparing the empirical CDF just below and at each distinct value with the CDF at the
// rounding boundaries (midpoints to the neighbours) is the exact KS statistic of the rounded
// distribution, for every dtype alike.
double ks_distance(const at::Tensor& samples, c10::ScalarType dtype, double (*cdf)(double)) {
  auto sorted = std::get<0>(samples.to(torch::kFloat64).sort());
  const auto* v = sorted.data_ptr<double>();
  const int64_t n = sorted.numel();
  double d = 0;
  for (int64_t i = 0; i < n;) {
    int64_t j = i;
    while (j < n && v[j] == v[i]) ++j;
    const auto [below, above] = neighbours(dtype, v[i]);
    const double lower = cdf(0.5 * (below + v[i])), upper = cdf(0.5 * (v[i] + above));
    d = std::max(
        {d, std::abs(static_cast<double>(i) / n - lower), std::abs(static_cast<double>(j) / n - upper)});
    i = j;
  }
  return d;
}

double uniform_cdf(double x) { return std::clamp(x, 0.0, 1.0); }
double normal_cdf(double x) { return 0.5 * std::erfc(-x / std::sqrt(2.0)); }

double correlation(const at::Tensor& a, const at::Tensor& b) {
  auto x = a.to(torch::kFloat64) - a.to(torch::kFloat64).mean();
  auto y = b.to(torch::kFloat64) - b.to(torch::kFloat64).mean();
  return ((x * y).sum() / (x.norm() * y.norm())).item<double>();
}

// LibTorch's rounding of float32 values to a 16-bit dtype.
at::Tensor rounded(const at::Tensor& float_values, c10::ScalarType dtype) {
  auto out = torch::empty(float_values.sizes(), torch::TensorOptions().dtype(dtype));
  const float* v = float_values.data_ptr<float>();
  auto* bits = static_cast<uint16_t*>(out.data_ptr());
  for (int64_t i = 0; i < out.numel(); ++i)
    bits[i] = dtype == torch::kHalf ? c10::Half(v[i]).x : c10::BFloat16(v[i]).x;
  return out;
}

}  // namespace

TEST(CounterRng, PhiloxMatchesRandom123KnownAnswers) {
  // Random123's kat_vectors for philox4x32 10: counter, key -> output.
  struct Vector {
    uint32_t counter[4], key[2], expected[4];
  };
  const Vector vectors[] = {
      {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
      {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
       {0xffffffff, 0xffffffff},
       {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
      {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
       {0xa4093822, 0x299f31d0},
       {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
  };
  for (const auto& v : vectors) {
    uint32_t out[4];
    px::block(v.counter[0], v.counter[1], v.counter[2], v.counter[3], v.key[0], v.key[1], out);
    const auto reference =
        reference_philox({v.counter[0], v.counter[1], v.counter[2], v.counter[3]}, {v.key[0], v.key[1]});
    for (int word = 0; word < 4; ++word) {
      EXPECT_EQ(out[word], v.expected[word]) << "philox.h, word " << word;
      EXPECT_EQ(reference[word], v.expected[word]) << "the test's own Philox, word " << word;
    }
  }
}

TEST(CounterRng, StreamBlocksAreKeyedBySeedAndKeyAsSpecified) {
  // counter = (block lo, block hi, key lo, key hi), Philox key = (seed lo, seed hi).
  const RandomKey key{0x0123456789abcdefull, 0xfedcba9876543210ull};
  for (uint64_t block :
       {uint64_t{0}, uint64_t{5}, uint64_t{0xffffffff}, uint64_t{0x100000000}, ~uint64_t{0}}) {
    uint32_t out[4];
    px::stream_block(key.seed, key.key, block, out);
    const auto expected = reference_block(key, block);
    for (int word = 0; word < 4; ++word) EXPECT_EQ(out[word], expected[word]) << block;
  }
}

TEST(CounterRng, FirstValuesForAFixedKeyAreTheDefinedOnes) {
  // Pinned against the definition, recomputed here from the test's own Philox: seed 42, key 7 (stream
  // v1's normals; v2's are pinned in normal_streams_test.cpp).
  const RandomKey key{42, 7, InitStream::kPhiloxBoxMuller24};
  auto uniform = fill(torch::kFloat32, 8, key, /*normal=*/false);
  for (int i = 0; i < 8; ++i)
    EXPECT_EQ(uniform[i].item<float>(), reference_uniform_float(key, i, 0.0f, 1.0f)) << "element " << i;
  auto scaled = fill(torch::kFloat32, 8, key, /*normal=*/false, /*first=*/3, -0.25, 0.5);
  for (int i = 0; i < 8; ++i)
    EXPECT_EQ(scaled[i].item<float>(), reference_uniform_float(key, 3 + i, -0.25f, 0.5f)) << "element " << i;
  auto normal = fill(torch::kFloat32, 8, key, /*normal=*/true);
  for (int i = 0; i < 8; ++i) {
    const double exact = reference_normal(key, i);
    EXPECT_NEAR(normal[i].item<float>(), exact, 1e-6 + 4e-7 * std::abs(exact)) << "element " << i;
  }
}

TEST(CounterRng, FloatFillsFollowTheDefinitionElementByElement) {
  // Uniform values are exact: bit for bit the definition. Normal ones use volt's own log and sin/cos, so
  // they are within a few float ulps of the exact Box–Muller value: the radius (<= 1 ulp) and the
  // sin/cos (<= 1.1e-7 absolute) bound |z - exact| by 1e-6 + 4e-7 |exact|. Stream v1 (v2: see
  // normal_streams_test.cpp).
  const RandomKey key{0x9e3779b97f4a7c15ull, 0x0000000500000003ull, InitStream::kPhiloxBoxMuller24};
  const int64_t first = 1001, n = 50000;
  auto uniform = fill(torch::kFloat32, n, key, /*normal=*/false, first, -3.0, 8.0);
  auto normal = fill(torch::kFloat32, n, key, /*normal=*/true, first, 0.0, 1.0);
  const float* u = uniform.data_ptr<float>();
  const float* z = normal.data_ptr<float>();
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_EQ(u[i], reference_uniform_float(key, first + i, -3.0f, 8.0f)) << "element " << first + i;
    const double exact = reference_normal(key, first + i);
    ASSERT_NEAR(z[i], exact, 1e-6 + 4e-7 * std::abs(exact)) << "element " << first + i;
  }
}

TEST(CounterRng, SixteenBitFillsAreTheFloatValuesRoundedToNearestEven) {
  for (auto d : kDistributions) {
    const RandomKey key = for_distribution({3, 9}, d);
    const bool normal = d != Distribution::kUniform;
    auto values = fill(torch::kFloat32, 100003, key, normal, 77, 0.5, 0.02);
    for (auto dtype : {torch::kFloat16, torch::kBFloat16}) {
      auto t = fill(dtype, 100003, key, normal, 77, 0.5, 0.02);
      EXPECT_TRUE(torch::equal(t, rounded(values, dtype))) << dtype << " " << name_of(d);
    }
  }
}

TEST(CounterRng, Float64FillsFollowTheDefinition) {
  const RandomKey key{5, 6};
  const int64_t first = 333, n = 20000;
  auto uniform = fill(torch::kFloat64, n, key, /*normal=*/false, first, 1.0, 2.0);
  auto normal = fill(torch::kFloat64, n, key, /*normal=*/true, first, -1.0, 3.0);
  const double* u = uniform.data_ptr<double>();
  const double* z = normal.data_ptr<double>();
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_EQ(u[i], reference_uniform_double(key, first + i, 1.0, 2.0)) << "element " << first + i;
    ASSERT_EQ(z[i], reference_normal_double(key, first + i, -1.0, 3.0)) << "element " << first + i;
  }
}

TEST(CounterRng, EveryKernelTheCpuRunsMatchesPhiloxHeaderElementByElement) {
  // float_element is the one-element definition that the CUDA kernels share: each CPU kernel this
  // machine runs (baseline, AVX2, AVX-512, AVX-512 with BF16) and the fill that picks one must produce
  // exactly its bits, at any offset. Both halves of seed and key are in use; the last offset crosses
  // block index 2^32 (v1) or 2^31 and 2^32 (v2, eight elements a block).
  for (auto d : kDistributions) {
    const RandomKey key = for_distribution({0x0123456789abcdefull, 0xfedcba9876543210ull}, d);
    const bool normal = d != Distribution::kUniform;
    for (int64_t first : {int64_t{0}, int64_t{1}, int64_t{2}, int64_t{3}, int64_t{7}, int64_t{255},
                          int64_t{256}, int64_t{257}, int64_t{511}, int64_t{513}, int64_t{100000},
                          (int64_t{1} << 34) - 1001, (int64_t{1} << 35) - 1001}) {
      const int64_t n = 3000;
      auto fill_t = fill(torch::kFloat32, n, key, normal, first, 0.25, 2.0);
      const float* f = fill_t.data_ptr<float>();
      for (int64_t i = 0; i < n; ++i)
        ASSERT_EQ(f[i], defined_element(d, key, first + i, 0.25f, 2.0f))
            << "volt::fill_*_slice, element " << first + i << " " << name_of(d);
      for (auto kernel : volt::detail::kCpuKernels) {
        if (!volt::detail::cpu_kernel_supported(kernel)) continue;
        auto out = torch::empty({n});
        volt::detail::cpu_fill(kernel, d, out.data_ptr(), RawDtype::kFloat32, n, key.seed, key.key, first,
                               0.25, 2.0);
        const float* k = out.data_ptr<float>();
        for (int64_t i = 0; i < n; ++i)
          ASSERT_EQ(k[i], defined_element(d, key, first + i, 0.25f, 2.0f))
              << volt::detail::cpu_kernel_name(kernel) << " kernel, element " << first + i << " "
              << name_of(d);
      }
    }
  }
}

namespace {

// The kernel fills of `dtype` with each kernel this CPU runs, in one thread.
std::vector<std::pair<std::string, at::Tensor>> fills_by_every_kernel(c10::ScalarType dtype, RawDtype raw,
                                                                      Distribution d, int64_t n,
                                                                      RandomKey key, int64_t first, double a,
                                                                      double b) {
  std::vector<std::pair<std::string, at::Tensor>> fills;
  for (auto kernel : volt::detail::kCpuKernels) {
    if (!volt::detail::cpu_kernel_supported(kernel)) continue;
    auto out = torch::empty({n}, torch::TensorOptions().dtype(dtype));
    volt::detail::cpu_fill(kernel, d, out.data_ptr(), raw, n, key.seed, key.key, first, a, b);
    fills.emplace_back(volt::detail::cpu_kernel_name(kernel), out);
  }
  return fills;
}

}  // namespace

TEST(CounterRng, EveryKernelTheCpuRunsGivesTheSameBitsAtEveryDtype) {
  for (auto [dtype, raw] :
       {std::pair{torch::kFloat32, RawDtype::kFloat32}, std::pair{torch::kFloat16, RawDtype::kFloat16},
        std::pair{torch::kBFloat16, RawDtype::kBFloat16}}) {
    for (auto d : kDistributions) {
      const int64_t first = 1237, n = 100003;
      const RandomKey key = for_distribution({3, 5}, d);
      auto whole = fill(dtype, n, key, d != Distribution::kUniform, first, 0.0, 1.0);
      for (const auto& [name, t] : fills_by_every_kernel(dtype, raw, d, n, key, first, 0.0, 1.0))
        EXPECT_TRUE(torch::equal(t, whole)) << name << " " << dtype << " " << name_of(d);
    }
  }
}

TEST(CounterRng, EveryKernelRoundsSubnormalHugeAndNanValuesAsLibTorch) {
  // Values that the fast conversions treat differently (AVX512_BF16 flushes subnormals and keeps NaN
  // payloads): each kernel's 16-bit output must be LibTorch's rounding of the float32 values.
  struct Case {
    bool normal;
    double a, b;
    const char* what;
  };
  const Case cases[] = {
      {false, 0.0, 1e-39, "float32 subnormals"}, {false, -3e-39, 6e-39, "subnormals of both signs"},
      {false, 0.0, 1e-5, "float16 subnormals"},  {false, -1e5, 2e5, "float16 overflow"},
      {true, 0.0, 1e-38, "normal subnormals"},   {true, std::nan(""), 1.0, "NaN mean"},
      {true, 0.0, INFINITY, "infinite spread"}};
  for (const auto& c : cases)
    for (auto d : kDistributions) {
      if (c.normal != (d != Distribution::kUniform)) continue;
      const RandomKey key = for_distribution({8, 8}, d);
      auto values = fill(torch::kFloat32, 20000, key, c.normal, 5, c.a, c.b);
      for (auto [dtype, raw] : {std::pair{torch::kFloat16, RawDtype::kFloat16},
                                std::pair{torch::kBFloat16, RawDtype::kBFloat16}}) {
        const auto expected = rounded(values, dtype);
        for (const auto& [name, t] : fills_by_every_kernel(dtype, raw, d, 20000, key, 5, c.a, c.b)) {
          const auto* got = static_cast<const uint16_t*>(t.data_ptr());
          const auto* want = static_cast<const uint16_t*>(expected.data_ptr());
          for (int64_t i = 0; i < t.numel(); ++i)
            ASSERT_EQ(got[i], want[i])
                << name << " " << dtype << " " << c.what << " " << name_of(d) << " element " << i;
        }
      }
    }
}

namespace {

// The CPU's flags as /proc/cpuinfo lists them (empty where there is none).
std::string cpu_flags() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpuinfo, line))
    if (line.rfind("flags", 0) == 0) return line + " ";
  return "";
}

}  // namespace

TEST(CounterRng, FillsRunTheBestKernelTheCpuHas) {
  const std::string flags = cpu_flags();
  if (flags.empty() || std::getenv("VOLT_CPU_KERNEL") != nullptr)
    GTEST_SKIP() << "no /proc/cpuinfo flags, or VOLT_CPU_KERNEL caps the kernel";
  auto has = [&](const char* flag) { return flags.find(std::string(" ") + flag + " ") != std::string::npos; };
  std::string expected = "x86-64";
  if (has("avx2") && has("fma")) expected = "avx2";
  if (expected == "avx2" && has("avx512f") && has("avx512bw") && has("avx512dq") && has("avx512vl"))
    expected = has("avx512_bf16") ? "avx512bf16" : "avx512";
  EXPECT_EQ(volt::counter_rng_cpu_kernel(), expected) << flags;
}

TEST(CounterRng, InitThreadsCoverEveryElementOnceAndUseEveryThread) {
  const int previous = at::get_num_threads();
  at::set_num_threads(2);
  const int64_t n = 10'000'019;
  std::vector<std::atomic<int>> hits(n);
  std::mutex mutex;
  std::set<std::thread::id> threads;
  volt::run_on_init_threads(n, [&](int64_t begin, int64_t end) {
    {
      const std::lock_guard<std::mutex> lock(mutex);
      threads.insert(std::this_thread::get_id());
    }
    for (int64_t i = begin; i < end; ++i) hits[i]++;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // so that one thread cannot take all
  });
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << i;
  EXPECT_EQ(threads.size(), 2u);
  EXPECT_THROW(volt::run_on_init_threads(n,
                                         [](int64_t begin, int64_t) {
                                           if (begin > 0) throw std::runtime_error("task failed");
                                         }),
               std::runtime_error);
  at::set_num_threads(previous);
}

TEST(CounterRng, FillsFromTwoThreadsAtOnceGiveTheSameBits) {
  // The second caller finds volt's workers busy and runs on threads of its own; both must be exact.
  const int previous = at::get_num_threads();
  at::set_num_threads(2);
  const auto expected = fill(torch::kBFloat16, 4'000'001, {2, 2}, true, 3);
  std::vector<at::Tensor> results(4);
  std::vector<std::thread> callers;
  for (size_t c = 0; c < results.size(); ++c)
    callers.emplace_back([&, c] { results[c] = fill(torch::kBFloat16, 4'000'001, {2, 2}, true, 3); });
  for (auto& caller : callers) caller.join();
  for (const auto& r : results) EXPECT_TRUE(torch::equal(r, expected));
  at::set_num_threads(previous);
}

TEST(CounterRng, OwnLogIsWithinOneUlpAndSinCosWithinTwoUlpsForEveryInput) {
  // Every possible u1 and u2 (24 bits each).
  double worst_log = 0, worst_radius = 0, worst_sin = 0, worst_cos = 0, worst_absolute = 0;
  for (uint32_t j = 0; j < (1u << 24); ++j) {
    const uint32_t word = j << 8;
    const double u1 = (j + 1.0) * 0x1p-24;
    if (j + 1 == (1u << 24)) {
      EXPECT_EQ(px::minus_two_log_unit(word), 0.0f) << "ln 1";
    } else {
      worst_log = std::max(worst_log, float_ulps(px::minus_two_log_unit(word), -2.0 * std::log(u1)));
      worst_radius =
          std::max(worst_radius, float_ulps(px::box_muller_radius(word), std::sqrt(-2.0 * std::log(u1))));
    }
    float s, c;
    px::sincos_2pi(word, &s, &c);
    const double angle = 2.0 * M_PI * j * 0x1p-24;
    const double exact_sin = std::sin(angle), exact_cos = std::cos(angle);
    worst_absolute = std::max({worst_absolute, std::abs(s - exact_sin), std::abs(c - exact_cos)});
    // At multiples of a quarter turn one of them is exactly 0 and ulps of it are meaningless.
    if (j % (1u << 22) != 0) {
      worst_sin = std::max(worst_sin, float_ulps(s, exact_sin));
      worst_cos = std::max(worst_cos, float_ulps(c, exact_cos));
    } else {
      EXPECT_EQ(std::abs(s) + std::abs(c), 1.0f) << j;
    }
  }
  EXPECT_LE(worst_log, 1.0);
  EXPECT_LE(worst_radius, 1.0);
  EXPECT_LE(worst_sin, 2.0);
  EXPECT_LE(worst_cos, 2.0);
  EXPECT_LE(worst_absolute, 1.2e-7);
}

TEST(CounterRng, HalfAndBFloat16RoundingMatchLibTorchOnAllKindsOfFloats) {
  // A stride through all 2^32 bit patterns (every sign, exponent and rounding case, NaN and infinity),
  // plus the boundaries.
  std::vector<uint32_t> patterns{0x00000000, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00000, 0x7f800001,
                                 0xffffffff, 0x477fe000, 0x477ff000, 0x477fefff, 0x38800000, 0x387fffff,
                                 0x33800000, 0x33000000, 0x33000001, 0x00000001, 0x3f808000, 0x3f818000};
  for (uint64_t bits = 0; bits < (uint64_t{1} << 32); bits += 257)
    patterns.push_back(static_cast<uint32_t>(bits));
  for (uint32_t bits : patterns) {
    float f;
    std::memcpy(&f, &bits, sizeof f);
    ASSERT_EQ(px::to_bfloat16(f), c10::BFloat16(f).x) << std::hex << bits;
    ASSERT_EQ(px::to_half(f), c10::Half(f).x) << std::hex << bits;
  }
}

TEST(CounterRng, OneAndTwoThreadsGiveTheSameBits) {
  const int previous = at::get_num_threads();
  for (auto dtype : kDtypes) {
    for (auto d : kDistributions) {
      const bool normal = d != Distribution::kUniform;
      at::set_num_threads(1);
      auto one = fill(dtype, 3000001, for_distribution({9, 1}, d), normal, /*first=*/7);
      at::set_num_threads(2);
      auto two = fill(dtype, 3000001, for_distribution({9, 1}, d), normal, /*first=*/7);
      EXPECT_TRUE(torch::equal(one, two)) << dtype << " " << name_of(d);
    }
  }
  at::set_num_threads(previous);
}

TEST(CounterRng, SlicesConcatenateToTheWholeFill) {
  std::mt19937 rng(3);
  for (auto dtype : kDtypes) {
    for (auto d : kDistributions) {
      const bool normal = d != Distribution::kUniform;
      const RandomKey key = for_distribution({11, 4}, d);
      const int64_t n = 20011;
      auto whole = fill(dtype, n, key, normal);
      for (int split = 0; split < 4; ++split) {
        std::vector<int64_t> cuts{0, n, 1, 2, 5};  // and some odd offsets inside the first block
        for (int c = 0; c < 6; ++c) cuts.push_back(static_cast<int64_t>(rng() % n));
        std::sort(cuts.begin(), cuts.end());
        std::vector<at::Tensor> parts;
        for (size_t i = 0; i + 1 < cuts.size(); ++i)
          parts.push_back(fill(dtype, cuts[i + 1] - cuts[i], key, normal, cuts[i]));
        EXPECT_TRUE(torch::equal(torch::cat(parts), whole)) << dtype << " " << name_of(d);
      }
    }
  }
}

TEST(CounterRng, ViewsFillAsTheSamePositionsOfTheirBase) {
  auto keyed = [](at::Tensor t, bool normal) {
    normal ? volt::keyed_normal_(t, {5, 5}, 0.0, 1.0) : volt::keyed_uniform_(t, {5, 5}, 0.0, 1.0);
  };
  for (auto dtype : kDtypes) {
    for (bool normal : {false, true}) {
      auto reference = fill(dtype, 64 * 48, {5, 5}, normal).view({64, 48});
      auto base = torch::zeros({64, 48}, torch::TensorOptions().dtype(dtype));
      auto view = base.t().slice(0, 3, 40, 2);  // transposed, strided, offset
      keyed(view, normal);
      EXPECT_TRUE(torch::equal(view, reference.t().slice(0, 3, 40, 2))) << dtype << " normal " << normal;
      EXPECT_EQ(base.count_nonzero().item<int64_t>(), view.numel()) << "wrote outside the view";

      auto rows = torch::zeros({64, 48}, torch::TensorOptions().dtype(dtype));
      auto middle = rows.slice(0, 10, 20);  // contiguous, at a storage offset
      keyed(middle, normal);
      EXPECT_TRUE(torch::equal(middle, reference.slice(0, 10, 20))) << dtype << " normal " << normal;
      EXPECT_EQ(rows.count_nonzero().item<int64_t>(), middle.numel()) << "wrote outside the rows";

      auto flat = torch::zeros({3000}, torch::TensorOptions().dtype(dtype));
      auto odd = flat.slice(0, 3, 2901);  // contiguous, at an odd element: 16-bit data not 4-byte aligned
      keyed(odd, normal);
      EXPECT_TRUE(torch::equal(odd, reference.view({-1}).slice(0, 3, 2901))) << dtype << " normal " << normal;
      EXPECT_EQ(flat.count_nonzero().item<int64_t>(), odd.numel()) << "wrote outside the slice";
    }
  }
}

TEST(CounterRng, FillsLeafParametersInPlaceUnderNoGrad) {
  auto weight = torch::zeros({32, 16}, torch::requires_grad());
  const void* data = weight.data_ptr();
  const auto version = weight._version();
  {
    torch::NoGradGuard no_grad;
    volt::keyed_normal_(weight, {1, 2}, 0.0, 0.02);
    auto transposed = weight.t();
    volt::keyed_uniform_(transposed, {1, 3}, -1.0, 1.0);
  }
  EXPECT_EQ(weight.data_ptr(), data);
  EXPECT_TRUE(weight.is_leaf());
  EXPECT_TRUE(weight.requires_grad());
  EXPECT_GT(weight._version(), version);
  // The transposed view covers every position: the weight now holds the uniform stream in storage order.
  EXPECT_TRUE(torch::equal(weight.detach(),
                           fill(torch::kFloat32, 32 * 16, {1, 3}, false, 0, -1.0, 2.0).view({32, 16})));
  try {
    volt::keyed_normal_(weight, {1, 2}, 0.0, 0.02);
    FAIL() << "wrote into a leaf that requires grad with grad mode on";
  } catch (const volt::Error& e) {
    EXPECT_NE(std::string(e.what()).find("NoGradGuard"), std::string::npos) << e.what();
  }
}

TEST(CounterRng, UniformAndNormalStatisticsHoldAtEveryDtype) {
  const int64_t n = 1 << 20;
  const double root_n = std::sqrt(static_cast<double>(n));
  // Bounds: means and variances within 6 standard errors (uniform: sd 1/sqrt(12), the variance's sd
  // sqrt(1/80 - 1/144); normal: 1 and sqrt(2)); KS distance below 1.95 / sqrt(n), the p = 0.001 critical
  // value (conservative for the rounded, discrete distributions; see ks_distance).
  for (auto dtype : kDtypes) {
    auto u = fill(dtype, n, {21, 3}, false).to(torch::kFloat64);
    EXPECT_NEAR(u.mean().item<double>(), 0.5, 6 * std::sqrt(1.0 / 12) / root_n) << dtype;
    EXPECT_NEAR(u.var().item<double>(), 1.0 / 12, 6 * std::sqrt(1.0 / 80 - 1.0 / 144) / root_n) << dtype;
    EXPECT_GE(u.min().item<double>(), 0.0) << dtype;
    EXPECT_LE(u.max().item<double>(), 1.0) << dtype;  // 16-bit dtypes may round up to 1
    EXPECT_LT(ks_distance(u, dtype, uniform_cdf), 1.95 / root_n) << dtype;

    auto z = fill(dtype, n, {21, 3}, true).to(torch::kFloat64);
    EXPECT_NEAR(z.mean().item<double>(), 0.0, 6 / root_n) << dtype;
    EXPECT_NEAR(z.var().item<double>(), 1.0, 6 * std::sqrt(2.0) / root_n) << dtype;
    EXPECT_LT(ks_distance(z, dtype, normal_cdf), 1.95 / root_n) << dtype;
    EXPECT_GT(z.abs().max().item<double>(), 4.5) << "tails are missing";
  }
}

TEST(CounterRng, ConsecutiveKeysAndSeedsAreUncorrelated) {
  const int64_t n = 1 << 20;
  const double bound = 5.0 / std::sqrt(static_cast<double>(n));
  for (bool normal : {false, true}) {
    auto base = fill(torch::kFloat32, n, {100, 7}, normal);
    EXPECT_LT(std::abs(correlation(base, fill(torch::kFloat32, n, {100, 8}, normal))), bound) << "keys";
    EXPECT_LT(std::abs(correlation(base, fill(torch::kFloat32, n, {101, 7}, normal))), bound) << "seeds";
    EXPECT_LT(std::abs(correlation(base.slice(0, 0, n - 1), base.slice(0, 1, n))), bound) << "neighbours";
    // Box–Muller's cosine and sine halves of a pair.
    auto pairs = base.view({-1, 2});
    EXPECT_LT(std::abs(correlation(pairs.select(1, 0), pairs.select(1, 1))), 5.0 / std::sqrt(n / 2.0));
  }
}

TEST(CounterRng, ScaledRangesAndZeroSizeTensors) {
  auto t = torch::empty({100000});
  volt::fill_uniform_slice(t, {1, 1}, 0, -3.0, 5.0);
  EXPECT_GE(t.min().item<float>(), -3.0f);
  EXPECT_LT(t.max().item<float>(), 5.0f);
  volt::fill_normal_slice(t, {1, 1}, 0, 10.0, 0.5);
  EXPECT_NEAR(t.mean().item<double>(), 10.0, 0.01);
  EXPECT_NEAR(t.std().item<double>(), 0.5, 0.01);
  auto empty = torch::empty({0, 4});
  EXPECT_NO_THROW(volt::keyed_uniform_(empty, {1, 1}, 0, 1));
  EXPECT_NO_THROW(volt::fill_normal_slice(empty, {1, 1}, 5, 0, 1));
}

TEST(CounterRng, UnsupportedTensorsAreRejectedWithTheFix) {
  auto ints = torch::empty({4}, torch::kLong);
  try {
    volt::keyed_uniform_(ints, {1, 1}, 0, 1);
    FAIL() << "filled an int64 tensor";
  } catch (const volt::Error& e) {
    EXPECT_NE(std::string(e.what()).find("Long"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(volt::counter_rng_supports(torch::kLong));
  EXPECT_TRUE(volt::counter_rng_supports(torch::kBFloat16));

  auto strided = torch::empty({8, 8}).t();
  EXPECT_THROW(volt::fill_uniform_slice(strided, {1, 1}, 0, 0, 1), volt::Error);
  auto expanded = torch::empty({1, 8}).expand({4, 8});
  EXPECT_THROW(volt::keyed_normal_(expanded, {1, 1}, 0, 1), volt::Error);
  auto contiguous = torch::empty({8});
  EXPECT_THROW(volt::fill_normal_slice(contiguous, {1, 1}, -1, 0, 1), volt::Error);
}

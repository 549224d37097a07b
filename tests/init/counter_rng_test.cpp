#include "volt/init/counter_rng.h"
#include "init/counter_rng_kernels.h"
#include "init/philox.h"
#include "volt/error.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

namespace px = volt::detail::philox;
using volt::RandomKey;

namespace {

const std::vector<c10::ScalarType> kDtypes{torch::kFloat64, torch::kFloat32, torch::kFloat16,
                                           torch::kBFloat16};

at::Tensor fill(c10::ScalarType dtype, int64_t n, RandomKey key, bool normal, int64_t first = 0) {
  auto t = torch::empty({n}, torch::TensorOptions().dtype(dtype));
  if (normal)
    volt::fill_normal_slice(t, key, first, 0.0, 1.0);
  else
    volt::fill_uniform_slice(t, key, first, 0.0, 1.0);
  return t;
}

// Kolmogorov–Smirnov distance of sorted samples against a CDF.
double ks_distance(at::Tensor samples, double (*cdf)(double)) {
  auto sorted = std::get<0>(samples.to(torch::kFloat64).sort());
  const auto* v = sorted.data_ptr<double>();
  const int64_t n = sorted.numel();
  double d = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double f = cdf(v[i]);
    d = std::max({d, f - static_cast<double>(i) / n, static_cast<double>(i + 1) / n - f});
  }
  return d;
}

double uniform_cdf(double x) { return std::clamp(x, 0.0, 1.0); }
double normal_cdf(double x) { return 0.5 * std::erfc(-x / std::sqrt(2.0)); }

}  // namespace

TEST(CounterRng, PhiloxMatchesRandom123KnownAnswers) {
  uint32_t out[4];
  px::block(0, 0, 0, 0, 0, 0, out);
  EXPECT_EQ(out[0], 0x6627e8d5u);
  EXPECT_EQ(out[1], 0xe169c58du);
  EXPECT_EQ(out[2], 0xbc57ac4cu);
  EXPECT_EQ(out[3], 0x9b00dbd8u);
  px::block(0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu, out);
  EXPECT_EQ(out[0], 0x408f276du);
  EXPECT_EQ(out[1], 0x41c83b0eu);
  EXPECT_EQ(out[2], 0xa20bc7c6u);
  EXPECT_EQ(out[3], 0x6d5451fdu);
  px::block(0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u, 0xa4093822u, 0x299f31d0u, out);
  EXPECT_EQ(out[0], 0xd16cfe09u);
  EXPECT_EQ(out[1], 0x94fdccebu);
  EXPECT_EQ(out[2], 0x5001e420u);
  EXPECT_EQ(out[3], 0x24126ea1u);
}

TEST(CounterRng, KernelsMatchTheElementwiseDefinition) {
  // Element i of a float stream is word i % 4 of block i / 4, transformed by philox.h.
  const RandomKey key{42, 7};
  const int64_t first = 13, n = 1000;
  for (bool normal : {false, true}) {
    auto t = fill(torch::kFloat32, n, key, normal, first);
    for (int64_t i = 0; i < n; ++i) {
      const auto element = static_cast<uint64_t>(first + i);
      uint32_t x[4];
      float values[4];
      px::stream_block(key.seed, key.key, element / 4, x);
      if (normal)
        px::normal4(x, 0.0f, 1.0f, values);
      else
        px::uniform4(x, 0.0f, 1.0f, values);
      ASSERT_EQ(t[i].item<float>(), values[element % 4]) << "element " << element << " normal " << normal;
    }
  }
}

TEST(CounterRng, VectorizedAndPortablePathsAgreeBitForBit) {
  using volt::detail::RawDtype;
  for (auto [dtype, raw] :
       {std::pair{torch::kFloat32, RawDtype::kFloat32}, std::pair{torch::kFloat16, RawDtype::kFloat16},
        std::pair{torch::kBFloat16, RawDtype::kBFloat16}}) {
    for (bool normal : {false, true}) {
      const int64_t first = 1237, n = 100003;
      auto fast = fill(dtype, n, {3, 5}, normal, first);
      auto portable = torch::empty({n}, torch::TensorOptions().dtype(dtype));
      volt::detail::cpu_fill_float_baseline(normal, portable.data_ptr(), raw, n, 3, 5, first, 0.0f, 1.0f);
      EXPECT_TRUE(torch::equal(fast, portable)) << dtype << " normal " << normal;
    }
  }
}

TEST(CounterRng, OwnLogAndSinCosAreWithinTwoUlpOfDoublePrecision) {
  std::mt19937 rng(1);
  double worst_log = 0, worst_trig = 0;
  for (int i = 0; i < 200000; ++i) {
    const uint32_t x = static_cast<uint32_t>(rng());
    const float u1 = px::unit_float_open_zero(x), u2 = px::unit_float(x);
    const double exact_log = std::log(static_cast<double>(u1));
    if (u1 != 1.0f)
      worst_log = std::max(worst_log, std::abs(px::log_f(u1) - exact_log) / std::abs(exact_log));
    float s, c;
    px::sincos_2pi(u2, &s, &c);
    const double angle = 2.0 * M_PI * static_cast<double>(u2);
    worst_trig = std::max({worst_trig, std::abs(s - std::sin(angle)), std::abs(c - std::cos(angle))});
  }
  EXPECT_LT(worst_log, 2.5e-7);   // 2 ulp of float is 2.4e-7 relative
  EXPECT_LT(worst_trig, 2.5e-7);  // absolute, on values of magnitude <= 1
}

TEST(CounterRng, HalfAndBFloat16RoundingMatchLibTorch) {
  std::mt19937 rng(2);
  std::vector<float> values{0.0f, -0.0f, 1.0f, 65504.0f, 65520.0f, 1e-8f, 6.1e-5f, 5.9e-8f, 3e38f, -2.5f};
  for (int i = 0; i < 100000; ++i)
    values.push_back(
        std::ldexp(static_cast<float>(rng()) / 4294967296.0f - 0.5f, static_cast<int>(rng() % 60) - 30));
  for (float f : values) {
    ASSERT_EQ(px::to_bfloat16(f), c10::BFloat16(f).x) << f;
    ASSERT_EQ(px::to_half(f), c10::Half(f).x) << f;
  }
}

TEST(CounterRng, OneAndTwoThreadsGiveTheSameBits) {
  const int previous = at::get_num_threads();
  for (auto dtype : kDtypes) {
    for (bool normal : {false, true}) {
      at::set_num_threads(1);
      auto one = fill(dtype, 3000001, {9, 1}, normal);
      at::set_num_threads(2);
      auto two = fill(dtype, 3000001, {9, 1}, normal);
      EXPECT_TRUE(torch::equal(one, two)) << dtype << " normal " << normal;
    }
  }
  at::set_num_threads(previous);
}

TEST(CounterRng, SlicesConcatenateToTheWholeFill) {
  std::mt19937 rng(3);
  for (auto dtype : kDtypes) {
    for (bool normal : {false, true}) {
      const int64_t n = 20011;
      auto whole = fill(dtype, n, {11, 4}, normal);
      for (int split = 0; split < 3; ++split) {
        std::vector<int64_t> cuts{0, n};
        for (int c = 0; c < 5; ++c) cuts.push_back(static_cast<int64_t>(rng() % n));
        std::sort(cuts.begin(), cuts.end());
        std::vector<at::Tensor> parts;
        for (size_t i = 0; i + 1 < cuts.size(); ++i)
          parts.push_back(fill(dtype, cuts[i + 1] - cuts[i], {11, 4}, normal, cuts[i]));
        EXPECT_TRUE(torch::equal(torch::cat(parts), whole)) << dtype << " normal " << normal;
      }
    }
  }
}

TEST(CounterRng, ViewsFillAsTheSamePositionsOfTheirBase) {
  for (auto dtype : kDtypes) {
    auto base = torch::zeros({64, 48}, torch::TensorOptions().dtype(dtype));
    auto reference = fill(dtype, 64 * 48, {5, 5}, true).view({64, 48});
    auto view = base.t().slice(0, 3, 40, 2);  // strided, offset, transposed
    volt::keyed_normal_(view, {5, 5}, 0.0, 1.0);
    auto expected = reference.t().slice(0, 3, 40, 2);
    EXPECT_TRUE(torch::equal(view, expected)) << dtype;
    EXPECT_EQ(base.count_nonzero().item<int64_t>(), view.numel()) << "wrote outside the view";
  }
}

TEST(CounterRng, UniformAndNormalStatisticsHoldAtEveryDtype) {
  const int64_t n = 1 << 20;
  // KS at p = 0.001: 1.95 / sqrt(n). Half and bfloat16 round values to a grid: the empirical CDF of rounded
  // samples is off by up to the CDF's change across half a grid step (2^-9 relative for bfloat16, so
  // 2^-9 for U[0,1) and 2^-9 * max(x * pdf(x)) ~ 0.0005 for the normal).
  for (auto dtype : kDtypes) {
    const double quantization = dtype == torch::kBFloat16 ? 0.002 : dtype == torch::kFloat16 ? 0.0003 : 0.0;
    auto u = fill(dtype, n, {21, 3}, false).to(torch::kFloat64);
    EXPECT_NEAR(u.mean().item<double>(), 0.5, 0.002) << dtype;
    EXPECT_NEAR(u.var().item<double>(), 1.0 / 12, 0.001) << dtype;
    EXPECT_GE(u.min().item<double>(), 0.0);
    EXPECT_LE(u.max().item<double>(), 1.0);
    EXPECT_LT(ks_distance(u, uniform_cdf), 1.95 / std::sqrt(n) + quantization) << dtype;
    auto z = fill(dtype, n, {21, 3}, true).to(torch::kFloat64);
    EXPECT_NEAR(z.mean().item<double>(), 0.0, 0.005) << dtype;
    EXPECT_NEAR(z.var().item<double>(), 1.0, 0.005) << dtype;
    EXPECT_LT(ks_distance(z, normal_cdf), 1.95 / std::sqrt(n) + quantization) << dtype;
    EXPECT_GT(z.abs().max().item<double>(), 4.0) << "tails are missing";
  }
}

TEST(CounterRng, ConsecutiveKeysAndSeedsAreUncorrelated) {
  const int64_t n = 1 << 20;
  const double bound = 5.0 / std::sqrt(static_cast<double>(n));
  auto correlation = [](const at::Tensor& a, const at::Tensor& b) {
    auto x = a.to(torch::kFloat64) - a.to(torch::kFloat64).mean();
    auto y = b.to(torch::kFloat64) - b.to(torch::kFloat64).mean();
    return ((x * y).sum() / (x.norm() * y.norm())).item<double>();
  };
  for (bool normal : {false, true}) {
    auto base = fill(torch::kFloat32, n, {100, 7}, normal);
    EXPECT_LT(std::abs(correlation(base, fill(torch::kFloat32, n, {100, 8}, normal))), bound);
    EXPECT_LT(std::abs(correlation(base, fill(torch::kFloat32, n, {101, 7}, normal))), bound);
    // Neighbouring elements of one stream, too.
    EXPECT_LT(std::abs(correlation(base.slice(0, 0, n - 1), base.slice(0, 1, n))), bound);
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
}

TEST(CounterRng, UnsupportedDtypesAreNamedInTheError) {
  auto ints = torch::empty({4}, torch::kLong);
  try {
    volt::keyed_uniform_(ints, {1, 1}, 0, 1);
    FAIL();
  } catch (const volt::Error& e) {
    EXPECT_NE(std::string(e.what()).find("Long"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(volt::counter_rng_supports(torch::kLong));
  EXPECT_TRUE(volt::counter_rng_supports(torch::kBFloat16));
}

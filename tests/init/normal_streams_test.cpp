// The normal streams (volt/init/init_stream.h): v2's values against their definition, and statistical
// tests that v1 and v2 alike must pass, on samples large enough to see a bias of 1e-3.
#include "volt/init/counter_rng.h"

#include "init/philox.h"
#include "init/philox_reference.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace px = volt::detail::philox;
using volt::InitStream;
using volt::RandomKey;
using volt::testing::reference_block;

namespace {

constexpr InitStream kStreams[] = {InitStream::kPhiloxBoxMuller24, InitStream::kPhiloxBoxMuller16};

// Stream v2's definition in double: word (i % 8) / 2 of block i / 8 makes the pair.
double reference_normal16(RandomKey key, uint64_t i) {
  const uint32_t word = reference_block(key, i / 8)[(i % 8) / 2];
  const double u1 = ((word & 0xffffu) + 0.5) * 0x1p-16, angle = 2.0 * M_PI * (word >> 16) * 0x1p-16;
  const double radius = std::sqrt(-2.0 * std::log(u1));
  return radius * (i % 2 == 0 ? std::cos(angle) : std::sin(angle));
}

// 2^26 values: the standard error of the mean is 1.2e-4, so the 5-sigma bound below (6.1e-4) fails a
// bias of 1e-3 (8 sigma) with near certainty. Generated and reduced in chunks (slices of one stream are
// the whole stream's values), so memory stays small.
constexpr int64_t kSamples = int64_t{1} << 26;
constexpr int64_t kChunk = int64_t{1} << 22;
constexpr double kSigmas = 5.0;  // a correct generator fails one bound with probability ~6e-7

// Calls visit(values, count) for consecutive float32 chunks of stream `key`'s first kSamples normals.
template <class Visit>
void for_each_chunk(RandomKey key, Visit visit) {
  auto chunk = torch::empty({kChunk});
  for (int64_t first = 0; first < kSamples; first += kChunk) {
    volt::fill_normal_slice(chunk, key, first, 0.0, 1.0);
    visit(chunk.data_ptr<float>(), kChunk);
  }
}

double normal_cdf(double x) { return 0.5 * std::erfc(-x / std::sqrt(2.0)); }

// Pearson correlation from running sums.
struct Correlation {
  double n = 0, sx = 0, sy = 0, sxx = 0, syy = 0, sxy = 0;
  void add(double x, double y) {
    n += 1;
    sx += x;
    sy += y;
    sxx += x * x;
    syy += y * y;
    sxy += x * y;
  }
  double value() const {
    const double cov = sxy / n - (sx / n) * (sy / n);
    return cov / std::sqrt((sxx / n - (sx / n) * (sx / n)) * (syy / n - (sy / n) * (sy / n)));
  }
  // Under independence the sample correlation has standard error 1/sqrt(n).
  double bound() const { return kSigmas / std::sqrt(n); }
};

}  // namespace

TEST(NormalStreams, V2ValuesFollowTheirDefinition) {
  // volt's short log and sin/cos against the double-precision definition: the log is within 6e-7
  // relative (1.2e-6 with float rounding), the sine and cosine within 1.2e-7 absolute, so |z - exact| is
  // below 1e-6 + 1e-6 |exact|. Both halves of seed and key in use, offsets across block 2^32.
  const RandomKey key{0x9e3779b97f4a7c15ull, 0x0000000500000003ull, InitStream::kPhiloxBoxMuller16};
  for (int64_t first : {int64_t{0}, int64_t{13}, (int64_t{1} << 35) - 777}) {
    const int64_t n = 50000;
    auto z = torch::empty({n});
    volt::fill_normal_slice(z, key, first, 0.0, 1.0);
    const float* v = z.data_ptr<float>();
    for (int64_t i = 0; i < n; ++i) {
      const double exact = reference_normal16(key, static_cast<uint64_t>(first + i));
      ASSERT_NEAR(v[i], exact, 1e-6 + 1e-6 * std::abs(exact)) << "element " << first + i;
    }
  }
}

TEST(NormalStreams, V2LogIsWithinItsBoundForEveryInputAndTheTailEndsAt4Point85) {
  double worst = 0, largest_radius = 0;
  for (uint32_t low = 0; low < (1u << 16); ++low) {
    const double exact = -2.0 * std::log((low + 0.5) * 0x1p-16);
    worst = std::max(worst, std::abs(px::minus_two_log_unit16(low) - exact) / exact);
    largest_radius = std::max(largest_radius, static_cast<double>(px::box_muller16_radius(low)));
  }
  EXPECT_LE(worst, 1.2e-6);
  EXPECT_NEAR(largest_radius, std::sqrt(2.0 * 17 * std::log(2.0)), 1e-5);
}

TEST(NormalStreams, MomentsTailsAndKolmogorovSmirnovMatchTheStandardNormal) {
  // Bounds are kSigmas standard errors of each statistic of N(0, 1) at n = 2^26: mean sqrt(1/n),
  // E[z^2] sqrt(2/n), E[z^3] sqrt(15/n), E[z^4] sqrt(96/n) (Var z^4 = 105 - 9); the fraction beyond
  // |z| > 3 and > 4, sqrt(p (1 - p) / n). KS: the largest |F_n - Phi| over a grid of 2^16 points on
  // [-8, 8] (a lower bound of the KS statistic, missing at most one bin's mass, < 1e-4), below 1.95 /
  // sqrt(n), the p = 0.001 critical value. v2's bounded tail (|z| <= 4.85) moves E[z^4] by 7e-4 of its
  // 5.8e-3 bound and the fraction beyond 4 not at all.
  constexpr int kBins = 1 << 16;
  constexpr double kLow = -8.0, kScale = kBins / 16.0;
  const double n = static_cast<double>(kSamples);
  const double p3 = std::erfc(3.0 / std::sqrt(2.0)), p4 = std::erfc(4.0 / std::sqrt(2.0));
  for (auto stream : kStreams) {
    double s1 = 0, s2 = 0, s3 = 0, s4 = 0, beyond3 = 0, beyond4 = 0;
    std::vector<int64_t> histogram(kBins + 1, 0);
    for_each_chunk({1234, 5, stream}, [&](const float* v, int64_t count) {
      for (int64_t i = 0; i < count; ++i) {
        const double z = v[i], z2 = z * z;
        s1 += z;
        s2 += z2;
        s3 += z2 * z;
        s4 += z2 * z2;
        beyond3 += std::abs(z) > 3.0;
        beyond4 += std::abs(z) > 4.0;
        const double bin = std::floor((z - kLow) * kScale);
        ++histogram[static_cast<size_t>(std::clamp(bin, 0.0, static_cast<double>(kBins)))];
      }
    });
    const char* name = volt::init_stream_name(stream);
    EXPECT_NEAR(s1 / n, 0.0, kSigmas * std::sqrt(1.0 / n)) << name << " mean";
    EXPECT_NEAR(s2 / n, 1.0, kSigmas * std::sqrt(2.0 / n)) << name << " variance";
    EXPECT_NEAR(s3 / n, 0.0, kSigmas * std::sqrt(15.0 / n)) << name << " skewness";
    EXPECT_NEAR(s4 / n, 3.0, kSigmas * std::sqrt(96.0 / n)) << name << " kurtosis (E z^4)";
    EXPECT_NEAR(beyond3 / n, p3, kSigmas * std::sqrt(p3 * (1 - p3) / n)) << name << " P(|z| > 3)";
    EXPECT_NEAR(beyond4 / n, p4, kSigmas * std::sqrt(p4 * (1 - p4) / n)) << name << " P(|z| > 4)";
    double below = 0, ks = 0;
    for (int b = 0; b < kBins; ++b) {  // bin b holds [kLow + b / kScale, kLow + (b + 1) / kScale)
      below += static_cast<double>(histogram[b]);
      ks = std::max(ks, std::abs(below / n - normal_cdf(kLow + (b + 1) / kScale)));
    }
    EXPECT_LT(ks, 1.95 / std::sqrt(n)) << name << " KS distance";
  }
}

TEST(NormalStreams, NeighbouringElementsKeysAndSeedsAreUncorrelated) {
  // Pearson correlations within kSigmas / sqrt(n) of 0 (their standard error under independence): of
  // each element with the next (a pair's two values and across pairs), with the one 4 and 8 further on
  // (the next Philox word and block of v2), of their squares (Box–Muller's pairs share a radius: the
  // squares would show a shared scale), and of element i under keys k and k + 1 and seeds s and s + 1.
  for (auto stream : kStreams) {
    const char* name = volt::init_stream_name(stream);
    Correlation lag1, lag4, lag8, squares, keys, seeds;
    auto next_key = torch::empty({kChunk}), next_seed = torch::empty({kChunk});
    int64_t first = 0;
    for_each_chunk({77, 3, stream}, [&](const float* v, int64_t count) {
      volt::fill_normal_slice(next_key, {77, 4, stream}, first, 0.0, 1.0);
      volt::fill_normal_slice(next_seed, {78, 3, stream}, first, 0.0, 1.0);
      const float* k = next_key.data_ptr<float>();
      const float* s = next_seed.data_ptr<float>();
      for (int64_t i = 0; i < count; ++i) {
        if (i + 1 < count) {
          lag1.add(v[i], v[i + 1]);
          squares.add(static_cast<double>(v[i]) * v[i], static_cast<double>(v[i + 1]) * v[i + 1]);
        }
        if (i + 4 < count) lag4.add(v[i], v[i + 4]);
        if (i + 8 < count) lag8.add(v[i], v[i + 8]);
        keys.add(v[i], k[i]);
        seeds.add(v[i], s[i]);
      }
      first += count;
    });
    for (const auto& [what, c] :
         {std::pair{"next element", &lag1}, std::pair{"element 4 on", &lag4},
          std::pair{"element 8 on", &lag8}, std::pair{"squares of neighbours", &squares},
          std::pair{"next key", &keys}, std::pair{"next seed", &seeds}})
      EXPECT_LT(std::abs(c->value()), c->bound()) << name << ": " << what;
  }
}

TEST(NormalStreams, SixteenBitValuesAreTheFloatValuesRounded) {
  // v2 keeps v1's promise: a float16 or bfloat16 fill is its float32 fill rounded to nearest even.
  const RandomKey key{3, 9, InitStream::kPhiloxBoxMuller16};
  auto values = torch::empty({100003});
  volt::fill_normal_slice(values, key, 77, 0.5, 0.02);
  for (auto dtype : {torch::kFloat16, torch::kBFloat16}) {
    auto t = torch::empty({100003}, torch::TensorOptions().dtype(dtype));
    volt::fill_normal_slice(t, key, 77, 0.5, 0.02);
    EXPECT_TRUE(torch::equal(t, values.to(dtype))) << dtype;
  }
}

TEST(NormalStreams, TheStreamIdSelectsTheValuesAndUniformsAreShared) {
  auto v1 = torch::empty({1000}), v2 = torch::empty({1000});
  volt::fill_normal_slice(v1, {5, 6, InitStream::kPhiloxBoxMuller24}, 0, 0.0, 1.0);
  volt::fill_normal_slice(v2, {5, 6, InitStream::kPhiloxBoxMuller16}, 0, 0.0, 1.0);
  EXPECT_FALSE(torch::equal(v1, v2));
  volt::fill_uniform_slice(v1, {5, 6, InitStream::kPhiloxBoxMuller24}, 0, 0.0, 1.0);
  volt::fill_uniform_slice(v2, {5, 6, InitStream::kPhiloxBoxMuller16}, 0, 0.0, 1.0);
  EXPECT_TRUE(torch::equal(v1, v2));
  EXPECT_EQ(RandomKey{}.stream, volt::kDefaultInitStream);
}

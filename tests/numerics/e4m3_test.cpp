#include "quartet/numerics/e4m3.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "support/test_support.h"

namespace quartet {
namespace {

const std::vector<double> kGrid = testing::e4m3_nonnegative_values();

TEST(E4M3, DecodesEveryCode) {
  for (int code = 0; code < 256; ++code) {
    const float v = e4m3_decode(static_cast<std::uint8_t>(code));
    if ((code & 0x7F) == 0x7F) {
      EXPECT_TRUE(std::isnan(v)) << "code " << code;
      continue;
    }
    const double magnitude = kGrid[code & 0x7F];
    EXPECT_EQ(v, (code & 0x80) ? -magnitude : magnitude) << "code " << code;
  }
  EXPECT_EQ(e4m3_decode(0x7E), 448.0f);
  EXPECT_EQ(e4m3_decode(0x08), 0.015625f);   // smallest normal 2^-6
  EXPECT_EQ(e4m3_decode(0x01), 0.001953125f);  // smallest subnormal 2^-9
}

// RNE against the exact grid reference (nearest value, ties to the even code, saturation).
void expect_rne_matches(float v) {
  const int code = testing::round_to_grid_rne(v, kGrid);
  const float got = e4m3_round_rne(v);
  ASSERT_EQ(got, static_cast<float>(kGrid[code])) << "v = " << v << " (bits 0x" << std::hex << testing::bits_from_float(v) << ")";
  ASSERT_EQ(e4m3_encode_rne(v), code) << "v = " << v;
}

TEST(E4M3, RneAtEveryGridPointMidpointAndNeighbour) {
  for (std::size_t i = 0; i < kGrid.size(); ++i) {
    const auto g = static_cast<float>(kGrid[i]);
    for (float v : {g, std::nextafter(g, 0.0f), std::nextafter(g, 1000.0f)}) expect_rne_matches(v);
    if (i + 1 < kGrid.size()) {
      const auto mid = static_cast<float>((kGrid[i] + kGrid[i + 1]) / 2);  // exact
      for (float v : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 1000.0f)}) expect_rne_matches(v);
    }
  }
}

// Every float in [2^-12, 2^-4) (the subnormal range, the 2^-10 tie to zero and the first
// normal binades) and in [128, 512) (the top binades and saturation): about 84M values.
TEST(E4M3, RneExhaustiveOverLowAndHighBinades) {
  const std::pair<float, float> ranges[] = {{0x1p-12f, 0x1p-4f}, {128.0f, 512.0f}};
  for (auto [from, to] : ranges) {
    const std::uint32_t b0 = testing::bits_from_float(from), b1 = testing::bits_from_float(to);
    std::int64_t mismatches = 0;
#pragma omp parallel for schedule(static, 1 << 16) reduction(+ : mismatches)
    for (std::int64_t b = b0; b < static_cast<std::int64_t>(b1); ++b) {
      const float v = testing::float_from_bits(static_cast<std::uint32_t>(b));
      mismatches += e4m3_round_rne(v) != static_cast<float>(kGrid[testing::round_to_grid_rne(v, kGrid)]);
    }
    EXPECT_EQ(mismatches, 0) << "in [" << from << ", " << to << ")";
  }
}

TEST(E4M3, RneOnRandomBitPatterns) {
  std::mt19937 gen(3);
  std::uniform_int_distribution<std::uint32_t> bits(0, testing::bits_from_float(600.0f));
  for (int i = 0; i < 2'000'000; ++i) expect_rne_matches(testing::float_from_bits(bits(gen)));
  EXPECT_EQ(e4m3_round_rne(1e30f), 448.0f);
  EXPECT_EQ(e4m3_round_rne(0.0f), 0.0f);
  EXPECT_EQ(e4m3_round_rne(1e-30f), 0.0f);
  EXPECT_EQ(e4m3_encode_rne(-3.0f), 0x80 | e4m3_encode_rne(3.0f));
}

TEST(E4M3, SrRoundsUpWithTheExactProbabilityIncludingSubnormals) {
  std::vector<float> values;
  for (std::size_t i = 0; i + 1 < kGrid.size(); i += 3) {
    for (double f : {0.0, 1e-6, 0.3, 0.5, 0.9999}) values.push_back(static_cast<float>(kGrid[i] + f * (kGrid[i + 1] - kGrid[i])));
  }
  std::mt19937 gen(5);
  std::uniform_real_distribution<float> low(0.0f, 0.02f), any(0.0f, 448.0f);
  for (int i = 0; i < 40; ++i) values.push_back(low(gen));
  for (int i = 0; i < 40; ++i) values.push_back(any(gen));

  for (float v : values) {
    const int lo = testing::floor_grid_index(v, kGrid);
    const int hi = lo + 1;
    const double p = (v - kGrid[lo]) / (kGrid[hi] - kGrid[lo]);
    int ups = 0;
    for (int k = 0; k < 65536; ++k) {
      const float r = e4m3_round_sr(v, static_cast<std::uint16_t>(k));
      ASSERT_TRUE(r == static_cast<float>(kGrid[lo]) || r == static_cast<float>(kGrid[hi])) << v << " -> " << r;
      ups += r == static_cast<float>(kGrid[hi]);
    }
    EXPECT_EQ(ups, testing::sr_round_up_count(p)) << "v = " << v;
  }
}

TEST(E4M3, SrSaturatesAndKeepsGridValues) {
  for (double g : kGrid) {
    EXPECT_EQ(e4m3_round_sr(static_cast<float>(g), 65535), static_cast<float>(g));
  }
  EXPECT_EQ(e4m3_round_sr(500.0f, 0), 448.0f);
  EXPECT_EQ(e4m3_encode_sr(-1.0f, 0), 0x80 | e4m3_encode_rne(1.0f));
}

}  // namespace
}  // namespace quartet

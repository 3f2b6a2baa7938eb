#include "quartet/numerics/e2m1.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "support/test_support.h"

namespace quartet {
namespace {

using testing::kE2M1Grid;

const std::vector<double> kGrid(kE2M1Grid.begin(), kE2M1Grid.end());

TEST(E2M1, DecodesEveryCode) {
  for (int code = 0; code < 16; ++code) {
    const double magnitude = kE2M1Grid[code & 7];
    const double expected = (code & 8) ? -magnitude : magnitude;
    EXPECT_EQ(e2m1_decode(static_cast<std::uint8_t>(code)), expected) << "code " << code;
  }
  EXPECT_EQ(e2m1_decode(8), 0.0f);  // -0 decodes to zero
}

// Every FP32 value in [0, 8] (about 1.09e9 of them) against the exact grid reference. This is
// the slowest test of the suite (a few seconds on two cores).
TEST(E2M1, RneMatchesExactReferenceForEveryFloatInZeroToEight) {
  const std::uint32_t last = testing::bits_from_float(8.0f);
  std::int64_t mismatches = 0;
  std::uint32_t first_bad = 0;
#pragma omp parallel for schedule(static, 1 << 16) reduction(+ : mismatches)
  for (std::int64_t b = 0; b <= static_cast<std::int64_t>(last); ++b) {
    const float v = testing::float_from_bits(static_cast<std::uint32_t>(b));
    const int expected = testing::round_to_grid_rne(v, kGrid);
    if (e2m1_magnitude_code_rne(v) != expected) {
      ++mismatches;
#pragma omp critical
      first_bad = static_cast<std::uint32_t>(b);
    }
  }
  EXPECT_EQ(mismatches, 0) << "e.g. at bits 0x" << std::hex << first_bad;
}

// e2m1_round_rne returns the code and its decoded value together: both must be what
// e2m1_encode_rne and e2m1_decode give, bit for bit (signs and -0 included), on a sweep of
// every 61st FP32 pattern of [-8, 8] plus the grid points and ties.
TEST(E2M1, RoundRneGivesTheEncodedCodeAndItsDecodedValue) {
  const std::uint32_t last = testing::bits_from_float(8.0f);
  std::int64_t mismatches = 0;
  for (std::uint32_t b = 0; b <= last; b += 61) {
    for (std::uint32_t sign : {0u, 0x80000000u}) {
      const float v = testing::float_from_bits(b | sign);
      std::uint8_t code = 0xFF;
      const float q = e2m1_round_rne(v, &code);
      mismatches += code != e2m1_encode_rne(v) || testing::bits_from_float(q) != testing::bits_from_float(e2m1_decode(code));
    }
  }
  for (float v : {0.0f, -0.0f, 0.25f, -0.25f, 0.75f, 1.25f, 1.75f, 2.5f, -3.5f, 5.0f, 6.0f, -6.0f, 7.0f}) {
    std::uint8_t code = 0xFF;
    const float q = e2m1_round_rne(v, &code);
    EXPECT_EQ(code, e2m1_encode_rne(v)) << v;
    EXPECT_EQ(testing::bits_from_float(q), testing::bits_from_float(e2m1_decode(code))) << v;
  }
  EXPECT_EQ(mismatches, 0);
}

// The split form 4/6 uses (round to a grid magnitude, encode the kept one later) gives the
// decoded value and code of the one-step encoder, for |v| on the same sweep; the code of every
// grid magnitude is its index.
TEST(E2M1, MagnitudeRoundingAndCodeOfMagnitudeAgreeWithTheEncoder) {
  for (int code = 0; code < 8; ++code) {
    EXPECT_EQ(e2m1_code_of_magnitude(static_cast<float>(kE2M1Grid[code])), static_cast<std::uint32_t>(code)) << code;
  }
  const std::uint32_t last = testing::bits_from_float(8.0f);
  std::int64_t mismatches = 0;
  for (std::uint32_t b = 0; b <= last; b += 61) {
    for (std::uint32_t sign : {0u, 0x80000000u}) {
      const float v = testing::float_from_bits(b | sign);
      const float q = e2m1_round_magnitude(v);
      const std::uint8_t code = e2m1_encode_rne(v);
      mismatches += testing::bits_from_float(q) != testing::bits_from_float(e2m1_decode(code & 7u)) ||
                    (e2m1_sign_code_bit(v) | e2m1_code_of_magnitude(q)) != code;
    }
  }
  EXPECT_EQ(mismatches, 0);
}

TEST(E2M1, RneTiesGoToTheEvenCode) {
  // midpoint, the code below it, the expected code at the tie (the even one of the two)
  const struct { float mid; int below; int at_tie; } ties[] = {
      {0.25f, 0, 0}, {0.75f, 1, 2}, {1.25f, 2, 2}, {1.75f, 3, 4}, {2.5f, 4, 4}, {3.5f, 5, 6}, {5.0f, 6, 6}};
  for (const auto& t : ties) {
    EXPECT_EQ(e2m1_magnitude_code_rne(t.mid), t.at_tie) << t.mid;
    EXPECT_EQ(e2m1_magnitude_code_rne(std::nextafter(t.mid, 0.0f)), t.below) << "just below " << t.mid;
    EXPECT_EQ(e2m1_magnitude_code_rne(std::nextafter(t.mid, 8.0f)), t.below + 1) << "just above " << t.mid;
  }
}

TEST(E2M1, RneSaturatesAndKeepsTheSign) {
  for (float v : {6.0f, 6.5f, 7.0f, 1e3f, 3.0e38f, std::numeric_limits<float>::infinity()}) {
    EXPECT_EQ(e2m1_encode_rne(v), 7) << v;
    EXPECT_EQ(e2m1_encode_rne(-v), 15) << -v;
  }
  EXPECT_EQ(e2m1_encode_rne(-0.1f), 8);  // negative values that round to zero keep the sign
  EXPECT_EQ(e2m1_encode_rne(-0.0f), 8);
  EXPECT_EQ(e2m1_encode_rne(0.0f), 0);
  std::mt19937 gen(7);
  std::uniform_real_distribution<float> dist(-8.0f, 8.0f);
  for (int i = 0; i < 100000; ++i) {
    const float v = dist(gen);
    const std::uint8_t code = e2m1_encode_rne(v);
    EXPECT_EQ(code & 7, testing::round_to_grid_rne(std::fabs(v), kGrid));
    EXPECT_EQ(code >> 3, v < 0 ? 1 : 0);
  }
}

// For each value, all 65536 random words are tried: the number that round up must be exactly
// the count the convention u = (k + 0.5)/65536 < p implies, and within 2^-17 of p * 65536.
TEST(E2M1, SrRoundsUpWithTheExactProbability) {
  std::vector<float> values;
  for (std::size_t i = 0; i + 1 < kGrid.size(); ++i) {
    const double lo = kGrid[i], hi = kGrid[i + 1];
    for (double f : {0.0, 1e-7, 0.1, 0.25, 0.5, 0.7, 0.999, 1.0 - 1e-7}) values.push_back(static_cast<float>(lo + f * (hi - lo)));
  }
  std::mt19937 gen(11);
  std::uniform_real_distribution<float> dist(0.0f, 6.0f);
  for (int i = 0; i < 200; ++i) values.push_back(dist(gen));

  for (float v : values) {
    const int lo = testing::floor_grid_index(v, kGrid);
    const int hi = std::min(lo + 1, 7);
    const double p = lo == 7 ? 0.0 : (v - kGrid[lo]) / (kGrid[hi] - kGrid[lo]);
    int ups = 0;
    for (int k = 0; k < 65536; ++k) {
      const int code = e2m1_magnitude_code_sr(v, static_cast<std::uint16_t>(k));
      ASSERT_TRUE(code == lo || code == hi) << v << " rounded to code " << code;
      ups += (code == hi && hi != lo);
    }
    EXPECT_EQ(ups, testing::sr_round_up_count(p)) << "v = " << v;
    EXPECT_LE(std::fabs(ups / 65536.0 - p), 1.0 / 131072.0 + 1e-12) << "v = " << v;
  }
}

TEST(E2M1, SrOfGridPointsIsExactAndAboveSixSaturates) {
  for (int code = 0; code < 8; ++code) {
    for (int k : {0, 1, 32767, 65535}) {
      EXPECT_EQ(e2m1_magnitude_code_sr(static_cast<float>(kGrid[code]), static_cast<std::uint16_t>(k)), code);
    }
  }
  for (int k : {0, 65535}) {
    EXPECT_EQ(e2m1_encode_sr(6.5f, static_cast<std::uint16_t>(k)), 7);
    EXPECT_EQ(e2m1_encode_sr(-100.0f, static_cast<std::uint16_t>(k)), 15);
  }
  EXPECT_EQ(e2m1_encode_sr(-0.25f, 0) >> 3, 1);
}

}  // namespace
}  // namespace quartet

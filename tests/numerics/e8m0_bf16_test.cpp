#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "quartet/numerics/bf16.h"
#include "quartet/numerics/e8m0.h"
#include "support/test_support.h"

namespace quartet {
namespace {

TEST(E8M0, DecodesEveryCode) {
  for (int e = 0; e < 255; ++e) EXPECT_EQ(e8m0_decode(static_cast<std::uint8_t>(e)), std::ldexp(1.0f, e - 127)) << e;
  EXPECT_TRUE(std::isnan(e8m0_decode(255)));
}

TEST(E8M0, FloorEncodingIsFloorLog2) {
  std::mt19937 gen(1);
  std::uniform_real_distribution<double> log2v(-120.0, 120.0);
  for (int i = 0; i < 100000; ++i) {
    const auto v = static_cast<float>(std::exp2(log2v(gen)));
    const int expected = static_cast<int>(std::floor(std::log2(static_cast<double>(v)))) + 127;
    ASSERT_EQ(e8m0_encode_floor(v), expected) << v;
  }
  EXPECT_EQ(e8m0_encode_floor(0.0f), 127);  // a zero scale is replaced by 1
  EXPECT_EQ(e8m0_encode_floor(3.0e38f), 254);
  EXPECT_EQ(e8m0_encode_floor(1e-40f), 0);  // below the range: the smallest scale
}

TEST(E8M0, RneIsTheNearestPowerOfTwoWithTiesToEven) {
  for (int k = -100; k < 100; ++k) {
    const double p = std::ldexp(1.0, k);
    EXPECT_EQ(e8m0_encode_rne(static_cast<float>(p * 1.25)), k + 127);
    EXPECT_EQ(e8m0_encode_rne(static_cast<float>(p * 1.75)), k + 128);
    const int tie = e8m0_encode_rne(static_cast<float>(p * 1.5));
    EXPECT_EQ(tie % 2, 0);
    EXPECT_TRUE(tie == k + 127 || tie == k + 128);
  }
}

TEST(E8M0, SrRoundsUpWithTheExactProbability) {
  for (double f : {0.0, 0.1, 0.5, 0.75, 0.999}) {
    const float v = static_cast<float>(std::ldexp(1.0 + f, 3));
    int ups = 0;
    for (int k = 0; k < 65536; ++k) ups += e8m0_encode_sr(v, static_cast<std::uint16_t>(k)) == 131;
    EXPECT_EQ(ups, testing::sr_round_up_count((v - 8.0) / 8.0)) << v;
  }
}

TEST(BF16, RoundsToNearestEven) {
  std::mt19937 gen(2);
  std::uniform_int_distribution<std::uint32_t> bits(0, 0x7F7FFFFFu);
  for (int i = 0; i < 1'000'000; ++i) {
    const float v = testing::float_from_bits(bits(gen));
    const std::uint32_t b = testing::bits_from_float(v);
    // Reference: the two BF16 neighbours and exact comparison against their midpoint.
    // The upper neighbour of the largest finite BF16 value is 2^128, which rounds to infinity.
    const double lo = testing::float_from_bits(b & 0xFFFF0000u);
    const std::uint32_t hi_bits = (b & 0xFFFF0000u) + 0x10000u;
    const double hi = hi_bits == 0x7F800000u ? std::ldexp(1.0, 128) : testing::float_from_bits(hi_bits);
    const double mid = (lo + hi) / 2;
    const bool up = v > mid || (v == mid && ((b >> 16) & 1u));
    const double expected = up ? (hi_bits == 0x7F800000u ? INFINITY : hi) : lo;
    ASSERT_EQ(round_to_bf16(v), expected) << v;
  }
  EXPECT_TRUE(std::isnan(round_to_bf16(NAN)));
  EXPECT_TRUE(std::isinf(round_to_bf16(3.4e38f)));
  EXPECT_EQ(round_to_bf16(-1.0f), -1.0f);
}

}  // namespace
}  // namespace quartet

#include "quartet/numerics/philox.h"

#include <gtest/gtest.h>

#include <set>
#include <vector>

#include "quartet/numerics/hadamard.h"

namespace quartet {
namespace {

// Known-answer vectors published with Random123 (kat_vectors, philox4x32 with 10 rounds).
TEST(Philox, Random123KnownAnswers) {
  struct Kat {
    PhiloxWords counter;
    std::uint32_t k0, k1;
    PhiloxWords expected;
  };
  const Kat kats[] = {
      {{0, 0, 0, 0}, 0, 0, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
      {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, 0xffffffff, 0xffffffff,
       {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
      {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, 0xa4093822, 0x299f31d0,
       {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
  };
  for (const auto& kat : kats) {
    const PhiloxWords out = philox4x32_10(kat.counter, kat.k0, kat.k1);
    EXPECT_EQ(out.x, kat.expected.x);
    EXPECT_EQ(out.y, kat.expected.y);
    EXPECT_EQ(out.z, kat.expected.z);
    EXPECT_EQ(out.w, kat.expected.w);
  }
}

// The documented counter layout: (x: block, y: row, z: call, w: stream), key = seed halves,
// decision d -> block d/8, word (d%8)/2, low half for even d.
TEST(Philox, CounterLayoutAndDecisionBits) {
  const RandomContext ctx{0x0123456789abcdefULL, 17, 5};
  for (std::uint32_t row : {0u, 1u, 1000u}) {
    for (std::uint32_t d = 0; d < 40; ++d) {
      const PhiloxWords w = philox4x32_10({d / 8, row, 5, 17}, 0x89abcdefu, 0x01234567u);
      const std::uint32_t words[4] = {w.x, w.y, w.z, w.w};
      const std::uint32_t word = words[(d % 8) / 2];
      const auto expected = static_cast<std::uint16_t>(d % 2 == 0 ? word & 0xFFFF : word >> 16);
      EXPECT_EQ(random_decision_bits(ctx, row, d), expected) << "row " << row << " decision " << d;
    }
  }
}

TEST(Philox, EveryCounterFieldChangesTheBits) {
  const RandomContext base{42, 3, 9};
  const PhiloxWords ref = philox_block(base, 10, 2);
  const auto differs = [&](const PhiloxWords& w) { return w.x != ref.x || w.y != ref.y || w.z != ref.z || w.w != ref.w; };
  EXPECT_TRUE(differs(philox_block({43, 3, 9}, 10, 2)));
  EXPECT_TRUE(differs(philox_block({42, 4, 9}, 10, 2)));
  EXPECT_TRUE(differs(philox_block({42, 3, 10}, 10, 2)));
  EXPECT_TRUE(differs(philox_block(base, 11, 2)));
  EXPECT_TRUE(differs(philox_block(base, 10, 3)));
  EXPECT_TRUE(differs(philox_block({42ULL | (1ULL << 40), 3, 9}, 10, 2)));  // the seed's high word is used
  const PhiloxWords again = philox_block(base, 10, 2);
  EXPECT_FALSE(differs(again));
}

// The 16-bit decisions are uniform: chi-square over 256 bins of the top byte, 2^20 samples.
// Under uniformity the statistic has mean 255 and sd sqrt(510) ~ 22.6; 255 + 6 sd = 390.
TEST(Philox, DecisionBitsAreUniform) {
  std::vector<double> bins(256, 0.0);
  const RandomContext ctx{7, 1, 0};
  const int n = 1 << 20;
  for (int i = 0; i < n; ++i) bins[random_decision_bits(ctx, static_cast<std::uint32_t>(i / 1024), i % 1024) >> 8] += 1;
  double chi2 = 0;
  const double expected = n / 256.0;
  for (double b : bins) chi2 += (b - expected) * (b - expected) / expected;
  EXPECT_LT(chi2, 390.0);
  EXPECT_GT(chi2, 120.0);  // 255 - 6 sd: suspiciously perfect counts would mean a broken generator
}

TEST(Philox, RotationSignsFollowTheDocumentedBits) {
  const RandomContext ctx{99, 12, 3};
  const Rotation r = Rotation::random(128, ctx);
  const PhiloxWords w = philox4x32_10({0, 0xFFFFFFFFu, 3, 12}, 99, 0);
  const std::uint32_t words[4] = {w.x, w.y, w.z, w.w};
  int negatives = 0;
  for (int j = 0; j < 128; ++j) {
    const float expected = ((words[j / 32] >> (j % 32)) & 1u) ? -1.0f : 1.0f;
    EXPECT_EQ(r.signs[j], expected) << j;
    negatives += r.signs[j] < 0;
  }
  EXPECT_GT(negatives, 30);
  EXPECT_LT(negatives, 98);
  // A smaller rotation takes the first signs of the same draw.
  const Rotation r32 = Rotation::random(32, ctx);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(r32.signs[j], r.signs[j]);
}

}  // namespace
}  // namespace quartet

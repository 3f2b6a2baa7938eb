// Independent tests of the random-number layer (numerics.md §3): Philox4x32-10 against the
// published Random123 known-answer vectors, and the documented counter layout of philox.h
// against an independent Philox written here from the published algorithm.
#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <set>

#include "quartet/numerics/hadamard.h"
#include "quartet/numerics/philox.h"

namespace {

// ---------------------------------------------------------------------------------------
// Independent Philox4x32-10 (Salmon, Moraes, Dror, Shaw, SC'11), written from the paper's
// description: the key is bumped by the Weyl constants BEFORE each of rounds 2..10.
using Block = std::array<std::uint32_t, 4>;

Block ref_philox4x32_10(Block ctr, std::uint32_t k0, std::uint32_t k1) {
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      k0 += 0x9E3779B9u;  // golden ratio
      k1 += 0xBB67AE85u;  // sqrt(3) - 1
    }
    const std::uint64_t p0 = std::uint64_t{0xD2511F53u} * ctr[0];
    const std::uint64_t p1 = std::uint64_t{0xCD9E8D57u} * ctr[2];
    ctr = Block{static_cast<std::uint32_t>(p1 >> 32) ^ ctr[1] ^ k0, static_cast<std::uint32_t>(p1),
                static_cast<std::uint32_t>(p0 >> 32) ^ ctr[3] ^ k1, static_cast<std::uint32_t>(p0)};
  }
  return ctr;
}

Block words(const quartet::PhiloxWords& w) { return Block{w.x, w.y, w.z, w.w}; }

struct Kat {
  Block ctr;
  std::uint32_t k0, k1;
  Block expected;
};

// Random123 tests/kat_vectors, the three "philox4x32 10" lines (counter, key, output).
const Kat kKats[] = {
    {{0x00000000u, 0x00000000u, 0x00000000u, 0x00000000u}, 0x00000000u, 0x00000000u,
     {0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}},
    {{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}, 0xffffffffu, 0xffffffffu,
     {0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}},
    {{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}, 0xa4093822u, 0x299f31d0u,
     {0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}},
};

TEST(SpecPhilox, IndependentReferenceReproducesRandom123KnownAnswers) {
  // Guards the oracle used by the layout tests below.
  for (const Kat& kat : kKats) EXPECT_EQ(ref_philox4x32_10(kat.ctr, kat.k0, kat.k1), kat.expected);
}

TEST(SpecPhilox, KnownAnswerVectors) {
  for (const Kat& kat : kKats) {
    const quartet::PhiloxWords ctr{kat.ctr[0], kat.ctr[1], kat.ctr[2], kat.ctr[3]};
    const quartet::PhiloxWords out = quartet::philox4x32_10(ctr, kat.k0, kat.k1);
    EXPECT_EQ(words(out), kat.expected) << std::hex << "ctr " << kat.ctr[0] << " key " << kat.k0;
    EXPECT_EQ(out[0], kat.expected[0]);
    EXPECT_EQ(out[1], kat.expected[1]);
    EXPECT_EQ(out[2], kat.expected[2]);
    EXPECT_EQ(out[3], kat.expected[3]);
  }
}

TEST(SpecPhilox, AgreesWithIndependentReferenceOnManyInputs) {
  std::uint32_t s = 12345;
  auto next = [&s] { return s = s * 1664525u + 1013904223u; };
  for (int i = 0; i < 2000; ++i) {
    const Block c{next(), next(), next(), next()};
    const std::uint32_t k0 = next(), k1 = next();
    ASSERT_EQ(words(quartet::philox4x32_10({c[0], c[1], c[2], c[3]}, k0, k1)), ref_philox4x32_10(c, k0, k1));
  }
}

// The documented layout (philox.h): key = (seed low 32, seed high 32), counter =
// (block, row, call, stream).
TEST(SpecPhilox, BlockUsesTheDocumentedCounterAndKeyLayout) {
  const quartet::RandomContext ctx{0x0123456789ABCDEFull, 7u, 42u};
  for (std::uint32_t row : {0u, 1u, 1000u, 0xFFFFFFFFu}) {
    for (std::uint32_t block : {0u, 1u, 77u}) {
      EXPECT_EQ(words(quartet::philox_block(ctx, row, block)),
                ref_philox4x32_10({block, row, 42u, 7u}, 0x89ABCDEFu, 0x01234567u))
          << "row " << row << " block " << block;
    }
  }
}

TEST(SpecPhilox, DecisionBitsAssignment) {
  // Decision d of a row: block d/8, word (d%8)/2, low 16 bits if d even, high if odd.
  const quartet::RandomContext ctx{99u, 3u, 5u};
  for (std::uint32_t row : {0u, 17u}) {
    for (std::uint32_t d = 0; d < 40; ++d) {
      const Block b = ref_philox4x32_10({d / 8, row, 5u, 3u}, 99u, 0u);
      const std::uint32_t word = b[(d % 8) / 2];
      const auto expected = static_cast<std::uint16_t>(d % 2 == 0 ? (word & 0xFFFFu) : (word >> 16));
      EXPECT_EQ(quartet::random_decision_bits(ctx, row, d), expected) << "row " << row << " d " << d;
      EXPECT_EQ(quartet::decision_bits(quartet::philox_block(ctx, row, d / 8), d % 8), expected);
    }
  }
}

TEST(SpecPhilox, DrawsArePureFunctionsAndEveryCoordinateMatters) {
  // Same inputs -> same bits; changing any one of seed (low or high half), stream, call, row,
  // decision index -> different bits (checked over 64 consecutive decisions = 1024 bits, so a
  // coincidence has probability 2^-1024).
  auto bits = [](const quartet::RandomContext& c, std::uint32_t row, std::uint32_t first) {
    std::array<std::uint16_t, 64> v{};
    for (std::uint32_t d = 0; d < 64; ++d) v[d] = quartet::random_decision_bits(c, row, first + d);
    return v;
  };
  const quartet::RandomContext base{0xDEADBEEF00000001ull, 2u, 3u};
  const auto ref = bits(base, 5, 0);
  EXPECT_EQ(bits(base, 5, 0), ref);
  std::set<std::array<std::uint16_t, 64>> seen{ref};
  const quartet::RandomContext variants[] = {
      {base.seed + 1, base.stream, base.call},
      {base.seed ^ (1ull << 40), base.stream, base.call},  // high half of the seed
      {base.seed, base.stream + 1, base.call},
      {base.seed, base.stream, base.call + 1},
  };
  for (const auto& v : variants) EXPECT_TRUE(seen.insert(bits(v, 5, 0)).second);
  EXPECT_TRUE(seen.insert(bits(base, 6, 0)).second) << "row must be part of the counter";
  EXPECT_TRUE(seen.insert(bits(base, 5, 64)).second) << "decision index must matter";
}

TEST(SpecPhilox, SixteenBitCoinsAreRoughlyUniform) {
  // 2^16 coins from consecutive decisions: the mean of k/65536 is 1/2 with standard deviation
  // sqrt(1/12 / 65536) = 1.13e-3; require |mean - 1/2| < 6 sigma. The count below 2^15 is
  // Binomial(65536, 1/2), sd 128; require within 6 sd of 32768.
  const quartet::RandomContext ctx{2024u, 0u, 0u};
  double sum = 0;
  int below = 0;
  const int n = 65536;
  for (int d = 0; d < n; ++d) {
    const std::uint16_t k = quartet::random_decision_bits(ctx, 3, static_cast<std::uint32_t>(d));
    sum += k / 65536.0;
    below += k < 32768;
  }
  EXPECT_NEAR(sum / n, 0.5, 6 * 1.13e-3);
  EXPECT_NEAR(below, 32768, 6 * 128);
}

// Rotation signs (philox.h): row kRotationSignRow, block 0; sign j is bit j % 32 of word j / 32,
// a set bit meaning -1.
TEST(SpecPhilox, RandomRotationSignsFollowTheDocumentedBits) {
  for (int n : {16, 32, 128}) {
    for (std::uint32_t call : {0u, 1u, 9u}) {
      const quartet::RandomContext ctx{0xABCDEF0123ull, 11u, call};
      const quartet::Rotation rot = quartet::Rotation::random(n, ctx);
      ASSERT_EQ(rot.size, n);
      const Block b = ref_philox4x32_10({0u, 0xFFFFFFFFu, call, 11u}, 0xCDEF0123u, 0xABu);
      for (int j = 0; j < n; ++j) {
        const bool negative = (b[j / 32] >> (j % 32)) & 1u;
        EXPECT_EQ(rot.signs[j], negative ? -1.0f : 1.0f) << "n " << n << " call " << call << " j " << j;
      }
    }
  }
  // Fresh signs per call (a 128-bit coincidence is impossible in practice).
  const quartet::RandomContext c0{5u, 0u, 0u}, c1{5u, 0u, 1u};
  EXPECT_FALSE(quartet::Rotation::random(128, c0) == quartet::Rotation::random(128, c1));
  EXPECT_TRUE(quartet::Rotation::random(128, c0) == quartet::Rotation::random(128, c0));
}

}  // namespace

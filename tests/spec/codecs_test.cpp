// Independent tests of the element and scale codecs, derived from numerics.md §1 and §3 alone.
//
// Every expected value below comes from the format definitions in the spec, evaluated in
// double precision (all grid points, midpoints and fractions involved are exact in double),
// never from the functions under test.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "quartet/numerics/e2m1.h"
#include "quartet/numerics/e4m3.h"
#include "quartet/numerics/e8m0.h"
#include "quartet/numerics/stochastic.h"

namespace {

// ---------------------------------------------------------------------------------------
// Reference model of the formats (numerics.md §1).

// E2M1 magnitudes by code 0..7.
constexpr double kE2M1Grid[8] = {0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0};

// E4M3 ("fn") magnitude of the 7 low bits, from the definition: bias 7, 3 mantissa bits,
// subnormals k * 2^-9, 0x7F NaN. Returns NaN for 0x7F.
double ref_e4m3_magnitude(unsigned low7) {
  const unsigned e = (low7 >> 3) & 15u, m = low7 & 7u;
  if (e == 15u && m == 7u) return std::numeric_limits<double>::quiet_NaN();
  if (e == 0) return std::ldexp(static_cast<double>(m), -9);
  return std::ldexp(1.0 + m / 8.0, static_cast<int>(e) - 7);
}

// The 127 non-negative finite E4M3 values in increasing order; index == code.
const std::vector<double>& e4m3_grid() {
  static const std::vector<double> grid = [] {
    std::vector<double> g;
    for (unsigned c = 0; c < 127; ++c) g.push_back(ref_e4m3_magnitude(c));
    return g;
  }();
  return grid;
}

// Round-to-nearest onto a sorted grid, ties to the even index (grid index == code, so this is
// "ties to even code"), saturating at the top. a >= 0.
template <typename Grid>
std::size_t ref_rne_index(const Grid& grid, std::size_t n, double a) {
  if (a >= grid[n - 1]) return n - 1;
  std::size_t i = 0;
  while (!(a < grid[i + 1])) ++i;  // grid[i] <= a < grid[i+1]
  const double mid = 0.5 * (grid[i] + grid[i + 1]);
  if (a < mid) return i;
  if (a > mid) return i + 1;
  return (i % 2 == 0) ? i : i + 1;
}

// Largest grid index with grid[i] <= a (a < top).
template <typename Grid>
std::size_t ref_floor_index(const Grid& grid, std::size_t n, double a) {
  std::size_t i = 0;
  while (i + 1 < n && !(a < grid[i + 1])) ++i;
  return i;
}

// Number of 16-bit words k with (k + 0.5) / 65536 < p: the exact count of "round up"
// decisions under the documented coin (stochastic.h). Exact in double for p in [0, 1].
int ref_up_count(double p) {
  const double x = 65536.0 * p - 0.5;  // k < x
  if (x <= 0) return 0;
  return static_cast<int>(std::min(65536.0, std::ceil(x)));
}

std::vector<float> sample_values(std::uint32_t seed, int n, float lo_exp, float hi_exp) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> e(lo_exp, hi_exp);
  std::vector<float> v;
  for (int i = 0; i < n; ++i) v.push_back(std::exp2(e(gen)));
  return v;
}

// ---------------------------------------------------------------------------------------
// E2M1

TEST(SpecE2M1, DecodesAllSixteenCodes) {
  for (unsigned code = 0; code < 16; ++code) {
    const double mag = kE2M1Grid[code & 7u];
    const double expected = (code & 8u) ? -mag : mag;
    EXPECT_EQ(static_cast<double>(quartet::e2m1_decode(static_cast<std::uint8_t>(code))), expected)
        << "code " << code;
  }
  // Code 8 is -0 and decodes to (a) zero.
  EXPECT_EQ(quartet::e2m1_decode(8), 0.0f);
}

TEST(SpecE2M1, RneTiesGoToTheEvenCode) {
  // midpoint -> expected magnitude (the neighbour with the even code)
  const std::pair<float, float> ties[] = {{0.25f, 0.0f}, {0.75f, 1.0f}, {1.25f, 1.0f}, {1.75f, 2.0f},
                                          {2.5f, 2.0f},  {3.5f, 4.0f},  {5.0f, 4.0f}};
  for (auto [mid, expected] : ties) {
    for (float sign : {1.0f, -1.0f}) {
      const std::uint8_t code = quartet::e2m1_encode_rne(sign * mid);
      EXPECT_EQ(quartet::e2m1_decode(code), sign * expected) << "tie at " << sign * mid;
      if (expected != 0.0f) {
        EXPECT_EQ((code & 8u) != 0, sign < 0) << "sign bit at " << sign * mid;
      }
    }
    // Just off the midpoint the nearest neighbour wins, whatever its parity.
    const float below = std::nextafter(mid, 0.0f), above = std::nextafter(mid, 100.0f);
    const std::size_t i = ref_floor_index(kE2M1Grid, 8, mid);
    EXPECT_EQ(quartet::e2m1_decode(quartet::e2m1_encode_rne(below)), static_cast<float>(kE2M1Grid[i]))
        << "just below " << mid;
    EXPECT_EQ(quartet::e2m1_decode(quartet::e2m1_encode_rne(above)), static_cast<float>(kE2M1Grid[i + 1]))
        << "just above " << mid;
  }
}

TEST(SpecE2M1, RneSaturatesAtSix) {
  for (float v : {6.0f, 6.5f, 7.0f, 12.0f, 1e6f, 3.0e38f, std::numeric_limits<float>::max()}) {
    EXPECT_EQ(quartet::e2m1_decode(quartet::e2m1_encode_rne(v)), 6.0f) << v;
    EXPECT_EQ(quartet::e2m1_decode(quartet::e2m1_encode_rne(-v)), -6.0f) << -v;
  }
}

TEST(SpecE2M1, RneMatchesNearestGridPointOnADenseSweep) {
  // Every 97th float bit pattern in [0, 8), plus both neighbours of each grid point: compare
  // with the double-precision nearest-grid-point reference.
  const std::uint32_t end = std::bit_cast<std::uint32_t>(8.0f);
  int checked = 0;
  for (std::uint32_t b = 0; b < end; b += 97) {
    const float v = std::bit_cast<float>(b);
    const double expected = kE2M1Grid[ref_rne_index(kE2M1Grid, 8, v)];
    ASSERT_EQ(static_cast<double>(quartet::e2m1_decode(quartet::e2m1_encode_rne(v))), expected) << v;
    ASSERT_EQ(static_cast<double>(quartet::e2m1_decode(quartet::e2m1_encode_rne(-v))),
              v == 0.0f ? 0.0 : -expected)
        << -v;
    ++checked;
  }
  EXPECT_GT(checked, 10000000);
}

TEST(SpecE2M1, StochasticRoundingProbabilitiesByExhaustiveCoins) {
  // For each value v, enumerate all 65536 coins. The result must always be one of the two
  // grid neighbours lo <= |v| < hi, and the fraction rounding up must equal
  // p = (|v| - lo)/(hi - lo) within 2^-17 (numerics.md §3). With the documented coin
  // u = (k + 0.5)/65536, "up iff u < p", the count is exactly #{k : k + 0.5 < 65536 p}.
  std::vector<float> values = sample_values(1234, 300, -4.0f, 2.7f);  // (1/16 .. 6.5)
  for (double g : kE2M1Grid) {
    values.push_back(static_cast<float>(g));  // on the grid: never moves
    values.push_back(std::nextafter(static_cast<float>(g), 10.0f));
  }
  for (float v : {0.3f, 0.75f, 1.1f, 2.5f, 2.9999998f, 5.0f, 5.5f, 5.999f, 0.001f}) values.push_back(v);
  for (float v0 : values) {
    for (float v : {v0, -v0}) {
      const double a = std::fabs(static_cast<double>(v));
      int up = 0;
      double lo, hi;
      if (a >= 6.0) {
        lo = hi = 6.0;
      } else {
        const std::size_t i = ref_floor_index(kE2M1Grid, 8, a);
        lo = kE2M1Grid[i];
        hi = kE2M1Grid[i + 1];
      }
      for (std::uint32_t k = 0; k < 65536; ++k) {
        const float r = quartet::e2m1_decode(quartet::e2m1_encode_sr(v, static_cast<std::uint16_t>(k)));
        const double m = std::fabs(static_cast<double>(r));
        if (m == hi && hi != lo) {
          ++up;
        } else if (m != lo) {
          FAIL() << "SR of " << v << " gave " << r << ", not a neighbour in [" << lo << ", " << hi << "]";
        }
        if (r != 0.0f) {
          ASSERT_EQ(r < 0, v < 0) << "sign not restored for " << v;
        }
      }
      if (hi == lo) {
        EXPECT_EQ(up, 0);
        continue;
      }
      const double p = (a - lo) / (hi - lo);
      EXPECT_LE(std::fabs(up / 65536.0 - p), std::ldexp(1.0, -17)) << "v=" << v << " p=" << p;
      EXPECT_EQ(up, ref_up_count(p)) << "documented coin convention, v=" << v;
    }
  }
}

TEST(SpecE2M1, StochasticRoundingSaturatesAboveSix) {
  for (float v : {6.0f, 6.25f, 7.0f, 100.0f}) {
    for (std::uint32_t k : {0u, 1u, 32767u, 65535u}) {
      EXPECT_EQ(quartet::e2m1_decode(quartet::e2m1_encode_sr(v, static_cast<std::uint16_t>(k))), 6.0f);
      EXPECT_EQ(quartet::e2m1_decode(quartet::e2m1_encode_sr(-v, static_cast<std::uint16_t>(k))), -6.0f);
    }
  }
}

// ---------------------------------------------------------------------------------------
// E4M3

TEST(SpecE4M3, DecodesAll256CodesFromTheFormatDefinition) {
  for (unsigned code = 0; code < 256; ++code) {
    const float got = quartet::e4m3_decode(static_cast<std::uint8_t>(code));
    const double mag = ref_e4m3_magnitude(code & 0x7Fu);
    if (std::isnan(mag)) {
      EXPECT_TRUE(std::isnan(got)) << "code " << code << " must be NaN";
      continue;
    }
    const double expected = (code & 0x80u) ? -mag : mag;
    EXPECT_EQ(static_cast<double>(got), expected) << "code " << code;
  }
  // Spot values from the table in numerics.md §1.
  EXPECT_EQ(quartet::e4m3_decode(0x7E), 448.0f);        // max
  EXPECT_EQ(quartet::e4m3_decode(0x08), 0.015625f);     // min normal 2^-6
  EXPECT_EQ(quartet::e4m3_decode(0x01), 0.001953125f);  // min subnormal 2^-9
  EXPECT_EQ(quartet::e4m3_decode(0x07), 7.0f / 512.0f);
  EXPECT_EQ(quartet::e4m3_decode(0x38), 1.0f);
  EXPECT_TRUE(std::isnan(quartet::e4m3_decode(0x7F)));
  EXPECT_TRUE(std::isnan(quartet::e4m3_decode(0xFF)));
  for (unsigned code = 0; code < 0x7F; ++code) EXPECT_FALSE(std::isinf(quartet::e4m3_decode(code)));
}

TEST(SpecE4M3, RneOnGridPointsMidpointsAndNeighbours) {
  const auto& grid = e4m3_grid();
  for (std::size_t i = 0; i < grid.size(); ++i) {
    const float g = static_cast<float>(grid[i]);
    EXPECT_EQ(quartet::e4m3_round_rne(g), g);
    EXPECT_EQ(quartet::e4m3_encode_rne(g), static_cast<std::uint8_t>(i)) << "grid value " << g;
    EXPECT_EQ(quartet::e4m3_encode_rne(-g), static_cast<std::uint8_t>(i == 0 ? 0x80 : (0x80 | i)))
        << "grid value " << -g;
    if (i + 1 == grid.size()) break;
    // Midpoints have at most 5 significant bits: exact in FP32.
    const double mid_d = 0.5 * (grid[i] + grid[i + 1]);
    const float mid = static_cast<float>(mid_d);
    ASSERT_EQ(static_cast<double>(mid), mid_d);
    const double tie = (i % 2 == 0) ? grid[i] : grid[i + 1];  // ties to the even code
    EXPECT_EQ(static_cast<double>(quartet::e4m3_round_rne(mid)), tie) << "tie at " << mid;
    EXPECT_EQ(static_cast<double>(quartet::e4m3_round_rne(std::nextafter(mid, 0.0f))), grid[i]);
    EXPECT_EQ(static_cast<double>(quartet::e4m3_round_rne(std::nextafter(mid, 1000.0f))), grid[i + 1]);
    EXPECT_EQ(static_cast<double>(quartet::e4m3_decode(quartet::e4m3_encode_rne(-mid))), -tie);
  }
}

TEST(SpecE4M3, RneSaturatesAt448) {
  for (float v : {448.0f, 449.0f, 463.99f, 464.0f, 475.0f, 479.9f, 480.0f, 1000.0f, 1e30f, std::numeric_limits<float>::max()}) {
    EXPECT_EQ(quartet::e4m3_round_rne(v), 448.0f) << v;
    EXPECT_EQ(quartet::e4m3_encode_rne(v), 0x7E) << v;
    EXPECT_EQ(quartet::e4m3_encode_rne(-v), 0xFE) << -v;
  }
}

TEST(SpecE4M3, RneMatchesNearestGridPointForRandomValues) {
  const auto& grid = e4m3_grid();
  // Log-uniform over [2^-14, 2^10): below the subnormals up to beyond the max.
  for (float v : sample_values(77, 200000, -14.0f, 10.0f)) {
    const double expected = grid[ref_rne_index(grid, grid.size(), v)];
    ASSERT_EQ(static_cast<double>(quartet::e4m3_round_rne(v)), expected) << v;
    ASSERT_EQ(static_cast<double>(quartet::e4m3_decode(quartet::e4m3_encode_rne(v))), expected) << v;
    ASSERT_EQ(static_cast<double>(quartet::e4m3_decode(quartet::e4m3_encode_rne(-v))), -expected) << v;
  }
  // Around the subnormal range, tiny values: 2^-10 is the tie between 0 and 2^-9.
  EXPECT_EQ(quartet::e4m3_round_rne(0.0f), 0.0f);
  EXPECT_EQ(quartet::e4m3_round_rne(std::ldexp(1.0f, -10)), 0.0f);
  EXPECT_EQ(quartet::e4m3_round_rne(std::nextafter(std::ldexp(1.0f, -10), 1.0f)), std::ldexp(1.0f, -9));
  EXPECT_EQ(quartet::e4m3_round_rne(3.0f * std::ldexp(1.0f, -10)), std::ldexp(2.0f, -9));  // 1.5*2^-9 tie -> 2
  EXPECT_EQ(quartet::e4m3_round_rne(1e-30f), 0.0f);
}

TEST(SpecE4M3, StochasticRoundingIncludingSubnormalsByExhaustiveCoins) {
  // SR onto the E4M3 grid, subnormals included (numerics.md §1: the reference kernels fall
  // back to RNE there, we must not). Enumerate all coins; fraction up = p within 2^-17.
  const auto& grid = e4m3_grid();
  std::vector<float> values = sample_values(99, 200, -6.0f, 8.9f);   // normals, up to ~478
  for (float v : sample_values(98, 120, -11.0f, -6.0f)) values.push_back(v);  // subnormal range
  for (float v : {0.0001f, 0.001f, 0.0029296875f /* 1.5*2^-9 */, 0.0155f, 0.0157f, 300.0f, 447.0f,
                  440.0001f, 0.0f}) {
    values.push_back(v);
  }
  for (std::size_t i = 0; i < grid.size(); i += 5) values.push_back(static_cast<float>(grid[i]));
  int subnormal_cases = 0;
  for (float v : values) {
    double lo, hi;
    if (v >= 448.0f) {
      lo = hi = 448.0;
    } else {
      const std::size_t i = ref_floor_index(grid, grid.size(), v);
      lo = grid[i];
      hi = grid[i + 1];
      if (grid[i] == v) hi = lo;  // on the grid: never moves
    }
    if (v < 0.015625f && v > 0.0f && lo != hi) ++subnormal_cases;
    int up = 0;
    for (std::uint32_t k = 0; k < 65536; ++k) {
      const double r = quartet::e4m3_round_sr(v, static_cast<std::uint16_t>(k));
      if (r == hi && hi != lo) {
        ++up;
      } else if (r != lo) {
        FAIL() << "SR of " << v << " gave " << r << ", not a neighbour in [" << lo << ", " << hi << "]";
      }
    }
    if (lo == hi) {
      EXPECT_EQ(up, 0) << v;
      continue;
    }
    const double p = (static_cast<double>(v) - lo) / (hi - lo);
    EXPECT_LE(std::fabs(up / 65536.0 - p), std::ldexp(1.0, -17)) << "v=" << v << " p=" << p;
    EXPECT_EQ(up, ref_up_count(p)) << "documented coin convention, v=" << v;
  }
  EXPECT_GT(subnormal_cases, 100);
}

TEST(SpecE4M3, StochasticEncodeMatchesSrValueAndSign) {
  // e4m3_encode_sr gives the code of the SR'd magnitude with the sign restored: check each
  // returned code decodes to lo or hi and the up-fraction equals p within 2^-17.
  const auto& grid = e4m3_grid();
  for (float v : {0.0123f, 0.7f, 3.3f, 100.5f, 0.0005f}) {
    for (float s : {1.0f, -1.0f}) {
      const std::size_t i = ref_floor_index(grid, grid.size(), v);
      int up = 0;
      for (std::uint32_t k = 0; k < 65536; ++k) {
        const std::uint8_t code = quartet::e4m3_encode_sr(s * v, static_cast<std::uint16_t>(k));
        ASSERT_EQ((code & 0x80u) != 0, s < 0) << "sign of " << s * v;
        const double mag = ref_e4m3_magnitude(code & 0x7Fu);
        if (mag == grid[i + 1]) {
          ++up;
        } else {
          ASSERT_EQ(mag, grid[i]) << s * v;
        }
      }
      const double p = (v - grid[i]) / (grid[i + 1] - grid[i]);
      EXPECT_LE(std::fabs(up / 65536.0 - p), std::ldexp(1.0, -17)) << v;
    }
  }
}

TEST(SpecE4M3, StochasticRoundingSaturatesAt448) {
  for (float v : {448.0f, 460.0f, 500.0f, 1e20f}) {
    for (std::uint32_t k : {0u, 65535u, 12345u}) {
      EXPECT_EQ(quartet::e4m3_round_sr(v, static_cast<std::uint16_t>(k)), 448.0f) << v;
      EXPECT_EQ(quartet::e4m3_encode_sr(v, static_cast<std::uint16_t>(k)), 0x7E) << v;
    }
  }
}

// ---------------------------------------------------------------------------------------
// E8M0

TEST(SpecE8M0, DecodesPowersOfTwoAnd255IsNaN) {
  for (unsigned e = 0; e < 255; ++e) {
    const double expected = std::ldexp(1.0, static_cast<int>(e) - 127);
    EXPECT_EQ(static_cast<double>(quartet::e8m0_decode(static_cast<std::uint8_t>(e))), expected) << "e=" << e;
  }
  EXPECT_TRUE(std::isnan(quartet::e8m0_decode(255)));
  EXPECT_EQ(quartet::e8m0_decode(127), 1.0f);
}

TEST(SpecE8M0, FloorEncodingIsFloorLog2) {
  // The MXFP4 scale rule 2^floor(log2 v) (numerics.md §6): for v > 0 in the normal range,
  // e = floor(log2 v) + 127.
  for (float v : sample_values(5, 5000, -120.0f, 120.0f)) {
    const int fl = static_cast<int>(std::floor(std::log2(static_cast<double>(v))));
    // log2 in double can round up to an integer only if v is within 2^-50 relative of a power
    // of two; recheck the bracket exactly.
    int e = fl;
    if (std::ldexp(1.0, e) > v) --e;
    if (std::ldexp(1.0, e + 1) <= v) ++e;
    EXPECT_EQ(static_cast<int>(quartet::e8m0_encode_floor(v)), e + 127) << v;
  }
  EXPECT_EQ(quartet::e8m0_encode_floor(1.0f), 127);
  EXPECT_EQ(quartet::e8m0_encode_floor(std::nextafter(2.0f, 0.0f)), 127);
  EXPECT_EQ(quartet::e8m0_encode_floor(2.0f), 128);
  EXPECT_EQ(quartet::e8m0_encode_floor(0.75f), 126);
}

}  // namespace

// Helpers shared by the tests: independent reference tables and random inputs that do not
// go through the code under test (std::mt19937_64, ldexp, double arithmetic).
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

namespace quartet::testing {

// E2M1 magnitudes by code, straight from numerics.md §1.
inline constexpr std::array<double, 8> kE2M1Grid = {0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0};

// The 127 non-negative finite E4M3 values in code order (code 0..126), from the format
// definition: bias 7, subnormals k * 2^-9.
inline std::vector<double> e4m3_nonnegative_values() {
  std::vector<double> v;
  for (int code = 0; code < 127; ++code) {
    const int e = code >> 3, m = code & 7;
    v.push_back(e == 0 ? std::ldexp(m, -9) : std::ldexp(1.0 + m / 8.0, e - 7));
  }
  return v;
}

inline float float_from_bits(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline std::uint32_t bits_from_float(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// Exact reference rounding to a sorted grid: nearest point, ties to the even index
// (index == code for both E2M1 magnitudes and non-negative E4M3). Values above the last point
// saturate. Every comparison is exact: midpoints of these grids are exact in double.
inline int round_to_grid_rne(double v, const std::vector<double>& grid) {
  if (v >= grid.back()) return static_cast<int>(grid.size()) - 1;
  const auto it = std::upper_bound(grid.begin(), grid.end(), v);
  const int hi = static_cast<int>(it - grid.begin());
  const int lo = hi - 1;
  const double mid = (grid[lo] + grid[hi]) / 2.0;
  if (v < mid) return lo;
  if (v > mid) return hi;
  return (lo % 2 == 0) ? lo : hi;
}

// Largest grid index whose value is <= v (v >= 0).
inline int floor_grid_index(double v, const std::vector<double>& grid) {
  const auto it = std::upper_bound(grid.begin(), grid.end(), v);
  return static_cast<int>(it - grid.begin()) - 1;
}

// How many of the 65536 16-bit words k satisfy (k + 0.5) / 65536 < p: the exact probability
// (times 65536) with which the SR convention of numerics.md §3 rounds up.
inline int sr_round_up_count(double p) {
  const double bound = p * 65536.0 - 0.5;  // k < bound
  if (bound <= 0) return 0;
  return std::min(65536, static_cast<int>(std::ceil(bound)));
}

inline std::vector<float> gaussian_matrix(std::int64_t rows, std::int64_t cols, std::uint64_t seed, double scale = 1.0) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> normal(0.0, scale);
  std::vector<float> v(static_cast<std::size_t>(rows * cols));
  for (auto& x : v) x = static_cast<float>(normal(gen));
  return v;
}

// Rows with log-uniform scales in [1, 2^span] (as in the quant-error protocol).
inline std::vector<float> scaled_gaussian_matrix(std::int64_t rows, std::int64_t cols, std::uint64_t seed,
                                                 double span_log2 = 8.0) {
  std::vector<float> v = gaussian_matrix(rows, cols, seed);
  for (std::int64_t r = 0; r < rows; ++r) {
    const double s = rows > 1 ? std::exp2(span_log2 * r / (rows - 1)) : 1.0;
    for (std::int64_t c = 0; c < cols; ++c) v[static_cast<std::size_t>(r * cols + c)] *= static_cast<float>(s);
  }
  return v;
}

}  // namespace quartet::testing

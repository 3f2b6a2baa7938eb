// The rotary-embedding tables every backend's attention uses, so that all of them rotate by the
// same numbers: [positions, head_dim / 2] cos and sin of position * theta^(-2i / head_dim),
// computed in double and rounded once to Real.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

namespace quartet {

// Rows first .. first + positions - 1 of those tables (sampling with a key/value cache rotates
// only the new positions), the same numbers as the rows of the whole tables.
template <class Real>
void rope_table_rows(std::int64_t first, std::int64_t positions, std::int64_t head_dim, double theta,
                     std::vector<Real>& cos_t, std::vector<Real>& sin_t) {
  const std::int64_t half = head_dim / 2;
  cos_t.resize(static_cast<std::size_t>(positions * half));
  sin_t.resize(cos_t.size());
  for (std::int64_t r = 0; r < positions; ++r) {
    const std::int64_t t = first + r;
    for (std::int64_t i = 0; i < half; ++i) {
      const double inv_freq = std::pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(head_dim));
      const double angle = static_cast<double>(t) * inv_freq;
      cos_t[static_cast<std::size_t>(r * half + i)] = static_cast<Real>(std::cos(angle));
      sin_t[static_cast<std::size_t>(r * half + i)] = static_cast<Real>(std::sin(angle));
    }
  }
}

template <class Real>
void rope_tables(std::int64_t positions, std::int64_t head_dim, double theta, std::vector<Real>& cos_t,
                 std::vector<Real>& sin_t) {
  rope_table_rows(0, positions, head_dim, theta, cos_t, sin_t);
}

}  // namespace quartet

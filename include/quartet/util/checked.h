#pragma once

// Sizes that come from flags, configs and file headers are untrusted: they are combined only
// through these helpers, which throw an Error naming the quantity instead of overflowing (signed
// overflow is undefined behaviour, and a wrapped size allocates or indexes the wrong amount).

#include <cmath>
#include <cstdint>
#include <limits>
#include <string_view>

#include "quartet/error.h"
#include <fmt/format.h>

namespace quartet {

// a * b, or an Error "<what> overflows: a x b".
inline std::int64_t checked_mul(std::int64_t a, std::int64_t b, std::string_view what) {
  std::int64_t r = 0;
  if (__builtin_mul_overflow(a, b, &r)) throw Error(fmt::format("{} overflows: {} x {}", what, a, b));
  return r;
}

// a + b, or an Error "<what> overflows: a + b".
inline std::int64_t checked_add(std::int64_t a, std::int64_t b, std::string_view what) {
  std::int64_t r = 0;
  if (__builtin_add_overflow(a, b, &r)) throw Error(fmt::format("{} overflows: {} + {}", what, a, b));
  return r;
}

// The product of every factor, checked at each step.
template <class... Ints>
std::int64_t checked_product(std::string_view what, std::int64_t first, Ints... rest) {
  std::int64_t r = first;
  ((r = checked_mul(r, static_cast<std::int64_t>(rest), what)), ...);
  return r;
}

// A double (from JSON or a flag) as an integer in [lo, hi], or an Error naming it: NaN, Inf,
// fractions and out-of-range values are refused rather than converted (which is undefined).
inline std::int64_t checked_integer(double value, std::int64_t lo, std::int64_t hi, std::string_view what) {
  // Bounds near 2^63 round when converted to double (INT64_MAX becomes 2^63, which passes
  // `value > hi` yet does not fit an int64: converting it is undefined). So the conversion is
  // guarded by the exact limits of int64, and the bounds are checked again as integers.
  const auto refuse = [&] { return Error(fmt::format("{} must be an integer in [{}, {}], got {}", what, lo, hi, value)); };
  if (!std::isfinite(value) || value != std::floor(value) || value < -0x1p63 || value >= 0x1p63) throw refuse();
  const auto r = static_cast<std::int64_t>(value);
  if (r < lo || r > hi) throw refuse();
  return r;
}

// An integer in [lo, hi], or an Error naming it (nothing is clamped).
inline std::int64_t checked_range(std::int64_t value, std::int64_t lo, std::int64_t hi, std::string_view what) {
  if (value < lo || value > hi) throw Error(fmt::format("{} must be in [{}, {}], got {}", what, lo, hi, value));
  return value;
}

}  // namespace quartet

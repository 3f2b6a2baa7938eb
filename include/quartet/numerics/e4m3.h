// E4M3 ("fn" variant): sign, four exponent bits (bias 7), three mantissa bits. Max 448,
// smallest normal 2^-6, subnormals k * 2^-9 (k = 1..7), no infinities, 0x7F/0xFF are NaN.
// NVFP4 block scales use the non-negative half only.
#pragma once

#include <cstdint>

#include "quartet/numerics/host_device.h"
#include "quartet/numerics/stochastic.h"

namespace quartet {

inline constexpr float kE4M3Max = 448.0f;
inline constexpr float kE4M3MinNormal = 0.015625f;       // 2^-6
inline constexpr float kE4M3MinSubnormal = 0.001953125f;  // 2^-9

QUARTET_HD float e4m3_decode(std::uint8_t code) {
  const std::uint32_t e = (code >> 3) & 15u;
  const std::uint32_t m = code & 7u;
  float mag;
  if ((code & 0x7Fu) == 0x7Fu) {
    mag = bits_float(0x7FC00000u);  // NaN
  } else if (e == 0) {
    mag = fmul(static_cast<float>(m), kE4M3MinSubnormal);
  } else {
    mag = bits_float(((e - 7u + 127u) << 23) | (m << 20));
  }
  return (code & 0x80u) ? -mag : mag;
}

// Spacing of the E4M3 grid around a (a >= 0, finite, a < 512): max(2^floor(log2 a), 2^-6)/8.
QUARTET_HD float e4m3_grid_step(float a) {
  std::uint32_t binade = float_bits(a) & 0x7F800000u;
  if (binade < (121u << 23)) binade = 121u << 23;  // 2^-6: subnormals share its spacing
  return bits_float(binade - (3u << 23));
}

// Round a non-negative finite value to the nearest E4M3 value, ties to even, saturating at
// 448. Adding c = binade * 2^20 makes the FP32 adder round v to a multiple of the E4M3 step
// (the ulp of c is exactly that step), ties to even; subtracting c is exact.
QUARTET_HD float e4m3_round_rne(float v) {
  if (!(v < kE4M3Max)) return kE4M3Max;
  const float step = e4m3_grid_step(v);
  const float c = bits_float(float_bits(step) + (23u << 23));  // step * 2^23
  return fsub(fadd(v, c), c);
}

// Stochastic rounding of a non-negative finite value onto the E4M3 grid, subnormals
// included (so it stays unbiased there). Saturates at 448. lo, frac and hi are exact.
QUARTET_HD float e4m3_round_sr(float v, std::uint16_t random_bits) {
  if (!(v < kE4M3Max)) return kE4M3Max;
  const float step = e4m3_grid_step(v);
  const float inv_step = bits_float((254u << 23) - float_bits(step));  // exact 1/step
  const float lo = fmul(static_cast<float>(static_cast<std::uint32_t>(fmul(v, inv_step))), step);
  const float frac = fmul(fsub(v, lo), inv_step);
  return sr_threshold(random_bits) < frac ? fadd(lo, step) : lo;
}

// Bits of a non-negative value that lies exactly on the E4M3 grid (as returned above).
QUARTET_HD std::uint8_t e4m3_bits_of_grid_value(float a) {
  if (a < kE4M3MinNormal) {
    return static_cast<std::uint8_t>(static_cast<std::uint32_t>(fmul(a, 512.0f)));
  }
  const std::uint32_t b = float_bits(a);
  const std::uint32_t e = ((b >> 23) & 0xFFu) - 127u + 7u;
  return static_cast<std::uint8_t>((e << 3) | ((b >> 20) & 7u));
}

QUARTET_HD std::uint8_t e4m3_encode_rne(float v) {
  const std::uint32_t sign = float_bits(v) >> 31;
  return static_cast<std::uint8_t>((sign << 7) | e4m3_bits_of_grid_value(e4m3_round_rne(fabs_bits(v))));
}

QUARTET_HD std::uint8_t e4m3_encode_sr(float v, std::uint16_t random_bits) {
  const std::uint32_t sign = float_bits(v) >> 31;
  return static_cast<std::uint8_t>(
      (sign << 7) | e4m3_bits_of_grid_value(e4m3_round_sr(fabs_bits(v), random_bits)));
}

}  // namespace quartet

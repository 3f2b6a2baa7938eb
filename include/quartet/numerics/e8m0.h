// E8M0: an unsigned power of two 2^(e-127), e = 0..254; 255 is NaN. MXFP4 block scales.
// There is no zero: encoders saturate to the range [2^-127, 2^127].
#pragma once

#include <cstdint>

#include "quartet/numerics/host_device.h"
#include "quartet/numerics/stochastic.h"

namespace quartet {

inline constexpr std::uint8_t kE8M0One = 127;  // 2^0

QUARTET_HD float e8m0_decode(std::uint8_t e) {
  if (e == 255u) return bits_float(0x7FC00000u);
  if (e == 0u) return bits_float(0x00400000u);  // 2^-127 is an FP32 subnormal
  return bits_float(static_cast<std::uint32_t>(e) << 23);
}

// floor(log2 v) + 127 for v > 0, clamped to [0, 254]; v == 0 maps to 127 (a zero scale is
// replaced by 1, numerics.md §5). This is the MXFP4 quantizers' scale rule.
QUARTET_HD std::uint8_t e8m0_encode_floor(float v) {
  if (v == 0.0f) return kE8M0One;
  const std::uint32_t b = float_bits(v) & 0x7FFFFFFFu;
  if (b < 0x00800000u) return 0u;  // below 2^-126: 2^-127 is the smallest scale there is
  const std::uint32_t e = b >> 23;                        // floor(log2 v) + 127, >= 1
  return static_cast<std::uint8_t>(e > 254u ? 254u : e);
}

// Position of v inside its binade [2^k, 2^(k+1)): (v - 2^k) / 2^k, exact.
QUARTET_HD float e8m0_binade_fraction(float v) {
  const std::uint32_t b = float_bits(v) & 0x7FFFFFFFu;
  return fmul(static_cast<float>(b & 0x007FFFFFu), 1.0f / 8388608.0f);
}

// Nearest power of two (linear distance), ties (v = 1.5 * 2^k) to the even code.
QUARTET_HD std::uint8_t e8m0_encode_rne(float v) {
  const std::uint32_t b = float_bits(v) & 0x7FFFFFFFu;
  // Below 2^-126 the neighbours are 2^-127 (code 0) and 2^-126 (code 1); the midpoint
  // 1.5 * 2^-127 has bits 0x00600000 and ties to the even code 0.
  if (b < 0x00800000u) return b > 0x00600000u ? 1u : 0u;
  const std::uint32_t e = b >> 23;
  const std::uint32_t mant = b & 0x007FFFFFu;
  std::uint32_t code = e;
  if (mant > 0x00400000u || (mant == 0x00400000u && (e & 1u))) code = e + 1u;
  return static_cast<std::uint8_t>(code > 254u ? 254u : code);
}

// Stochastic rounding between the two neighbouring powers of two: up with probability
// (v - 2^k) / 2^k.
QUARTET_HD std::uint8_t e8m0_encode_sr(float v, std::uint16_t random_bits) {
  const std::uint32_t b = float_bits(v) & 0x7FFFFFFFu;
  if (b < 0x00400000u) return 0u;  // below 2^-127: saturate to the smallest scale
  if (b < 0x00800000u) {           // [2^-127, 2^-126): up with probability (v - 2^-127)/2^-127
    const float frac = fmul(static_cast<float>(b - 0x00400000u), 1.0f / 4194304.0f);
    return sr_threshold(random_bits) < frac ? 1u : 0u;
  }
  const std::uint32_t e = b >> 23;
  const std::uint32_t code = e + (sr_threshold(random_bits) < e8m0_binade_fraction(v) ? 1u : 0u);
  return static_cast<std::uint8_t>(code > 254u ? 254u : code);
}

}  // namespace quartet

// E2M1 (FP4): sign bit 3, two exponent bits, one mantissa bit. Magnitudes by code 0..7:
// 0, 0.5, 1, 1.5, 2, 3, 4, 6. Code 8 (-0) decodes to 0.
//
// Choice written down once: a negative input that rounds to zero keeps its sign (code 8), as
// the hardware conversion does. Both backends use these functions, so they agree.
#pragma once

#include <cstdint>

#include "quartet/numerics/host_device.h"
#include "quartet/numerics/stochastic.h"

namespace quartet {

inline constexpr float kE2M1Max = 6.0f;

// Magnitude of a 3-bit code (0..7), built from its exponent and mantissa fields.
QUARTET_HD float e2m1_magnitude(std::uint32_t code3) {
  const std::uint32_t e = (code3 >> 1) & 3u;
  const std::uint32_t m = code3 & 1u;
  if (e == 0) return m ? 0.5f : 0.0f;
  return bits_float(((e - 1u + 127u) << 23) | (m << 22));
}

QUARTET_HD float e2m1_decode(std::uint8_t code) {
  const float mag = e2m1_magnitude(code & 7u);
  return (code & 8u) ? -mag : mag;
}

// Round-to-nearest, ties to the even code, saturating at 6: a compare ladder whose '>' and
// '>=' encode the tie direction at each midpoint (0.25->0, 0.75->1, 1.25->1, 1.75->2,
// 2.5->2, 3.5->4, 5->4). Exact for every float; +inf gives 6, NaN gives 0 (inputs are
// validated finite before any quantizer runs).
QUARTET_HD std::uint8_t e2m1_magnitude_code_rne(float a) {
  return static_cast<std::uint8_t>((a > 0.25f) + (a >= 0.75f) + (a > 1.25f) + (a >= 1.75f) +
                                   (a > 2.5f) + (a >= 3.5f) + (a > 5.0f));
}

QUARTET_HD std::uint8_t e2m1_encode_rne(float v) {
  const std::uint32_t sign = float_bits(v) >> 31;
  return static_cast<std::uint8_t>((sign << 3) | e2m1_magnitude_code_rne(fabs_bits(v)));
}

// Stochastic rounding of a magnitude onto the E2M1 grid: with lo <= a < hi adjacent grid
// points, hi with probability (a - lo)/(hi - lo). Every step of the computation is exact
// (hi - lo is a power of two and a - lo is exact by Sterbenz), so the only deviation from the
// ideal probability is the 16-bit quantisation of u (below 2^-17). Magnitudes above 6
// saturate to 6.
QUARTET_HD std::uint8_t e2m1_magnitude_code_sr(float a, std::uint16_t random_bits) {
  const std::uint32_t lo = (a >= 0.5f) + (a >= 1.0f) + (a >= 1.5f) + (a >= 2.0f) + (a >= 3.0f) +
                           (a >= 4.0f) + (a >= 6.0f);
  if (lo == 7u) return 7u;
  // grid step above code lo: 0.5 for codes 0..3, 1 for 4..5, 2 for 6; inverse is exact.
  const float inv_step = lo < 4u ? 2.0f : (lo < 6u ? 1.0f : 0.5f);
  const float frac = fmul(fsub(a, e2m1_magnitude(lo)), inv_step);
  return static_cast<std::uint8_t>(lo + (sr_threshold(random_bits) < frac ? 1u : 0u));
}

QUARTET_HD std::uint8_t e2m1_encode_sr(float v, std::uint16_t random_bits) {
  const std::uint32_t sign = float_bits(v) >> 31;
  return static_cast<std::uint8_t>((sign << 3) | e2m1_magnitude_code_sr(fabs_bits(v), random_bits));
}

}  // namespace quartet

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

// Magnitude of a 3-bit code (0..7), built from its exponent and mantissa fields without a
// branch (selects only): code 1 is the subnormal 0.5.
QUARTET_HD float e2m1_magnitude(std::uint32_t code3) {
  const std::uint32_t e = (code3 >> 1) & 3u;
  const std::uint32_t m = code3 & 1u;
  const std::uint32_t normal = ((e + 126u) << 23) | (m << 22);
  return bits_float(e != 0u ? normal : (m != 0u ? 0x3F000000u : 0u));
}

// The sign is bit 3; code 8 decodes to -0.0 (which equals 0).
QUARTET_HD float e2m1_decode(std::uint8_t code) {
  return bits_float(float_bits(e2m1_magnitude(code & 7u)) | (static_cast<std::uint32_t>(code & 8u) << 28));
}

// Round-to-nearest onto the E2M1 grid, ties to the even code, saturating at 6 (+inf and NaN
// give 6; inputs are validated finite before any quantizer runs). The add trick (kernels.md):
// with a = min(|v|, 6), E = max(2^floor(log2 a), 1) and c = E * 2^22, the FP32 sum s = a + c
// has ulp E/2, the E2M1 spacing in a's binade, so the adder rounds a to the grid with ties to
// even, which is the even code. s = c + k E/2 with k = 0..4 (E = 1), 2..4 (E = 2) or 2..3
// (E = 4): the code is k + 2 log2 E, read from s's low mantissa bits, and the rounded value
// is s - c (exact). Checked against an exact reference for every float in [0, 8]
// (tests/numerics/e2m1_test.cpp).
struct E2M1Sum {
  float s;                // a + c
  float c;                // E * 2^22
  std::uint32_t code3;    // magnitude code 0..7
};

// |v| clamped to 6, as bits: on the device one FMNMX with the |.| modifier; a NaN gives 6,
// as the integer clamp of the bits would.
QUARTET_HD std::uint32_t e2m1_clamped_magnitude_bits(float v) {
#if defined(__CUDA_ARCH__)
  return float_bits(fminf(fabsf(v), kE2M1Max));
#else
  const std::uint32_t b = float_bits(v) & 0x7FFFFFFFu;
  return b < 0x40C00000u ? b : 0x40C00000u;
#endif
}

// The add trick on |v| (the sign of v is ignored).
QUARTET_HD E2M1Sum e2m1_rne_sum(float v) {
  const std::uint32_t b = e2m1_clamped_magnitude_bits(v);
  const std::uint32_t binade = b & 0x7F800000u;
  const std::uint32_t e = binade > (127u << 23) ? binade : (127u << 23);  // E >= 1
  E2M1Sum r;
  r.c = bits_float(e + (22u << 23));
  r.s = fadd(bits_float(b), r.c);
  r.code3 = (float_bits(r.s) & 7u) + (e >> 22) - 254u;  // k + 2 log2 E
  return r;
}

// The magnitude code of a >= 0.
QUARTET_HD std::uint8_t e2m1_magnitude_code_rne(float a) { return static_cast<std::uint8_t>(e2m1_rne_sum(a).code3); }

// The sign bit of v as the code's bit 3.
QUARTET_HD std::uint32_t e2m1_sign_code_bit(float v) { return (float_bits(v) >> 28) & 8u; }

QUARTET_HD std::uint8_t e2m1_encode_rne(float v) {
  return static_cast<std::uint8_t>(e2m1_sign_code_bit(v) | e2m1_rne_sum(v).code3);
}

// RNE of v with its code and its decoded value (e2m1_decode(*code), bit for bit) in one go.
QUARTET_HD float e2m1_round_rne(float v, std::uint8_t* code) {
  const E2M1Sum r = e2m1_rne_sum(v);
  *code = static_cast<std::uint8_t>(e2m1_sign_code_bit(v) | r.code3);
  return bits_float(float_bits(fsub(r.s, r.c)) | (float_bits(v) & 0x80000000u));
}

// The grid magnitude RNE(|v|) alone (0, 0.5, ..., 6), for callers that decide on the code
// later (4/6 encodes only the candidate it keeps).
QUARTET_HD float e2m1_round_magnitude(float v) {
  const E2M1Sum r = e2m1_rne_sum(v);
  return fsub(r.s, r.c);
}

// The magnitude code (0..7) of a grid magnitude q, from its bits: q >> 22 is 0 for 0, 252
// for 0.5 and 252 + code for 1 .. 6. Precondition: q is +0 or a positive grid magnitude (at most
// 6), as e2m1_round_magnitude returns; the device is told that the code is below 8.
QUARTET_HD std::uint32_t e2m1_code_of_magnitude(float q) {
  const std::uint32_t t = float_bits(q) >> 22;
  const std::uint32_t c = (t > 253u ? t : 253u) - 252u;
#if defined(__CUDA_ARCH__)
  // t <= 259 by the precondition, so c <= 7; told to the compiler, so that packing two codes per
  // byte needs no masks to a byte first. The same hint on e2m1_rne_sum's code was measured
  // without gain for rtn and MS-EDEN and with QuEST 30 instructions per group slower
  // (docs/results/ncu-739a39b-h200.txt, builds 2 and 3).
  __builtin_assume(c < 8u);
#endif
  return t != 0u ? c : 0u;
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

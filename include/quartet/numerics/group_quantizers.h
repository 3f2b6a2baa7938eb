// The quantizers of numerics.md §5–6, one quantization group at a time, as the exact FP32
// operation sequences both backends execute. Tensor-level constants (t and the multipliers
// derived from it) come from the *_tensor_* functions below, so the GPU, which computes
// them from a device-side amax, uses the same operations too.
//
// Conventions:
//  * y points at one group of already-rotated, finite values; codes receives one unpacked
//    E2M1 code (0..15) per element.
//  * "one correctly rounded reciprocal per group, then multiplies": a group's elements are
//    scaled by r = 1/(s*t), never divided one by one.
//  * The dequantized value of code q under block scale s and tensor scale t is (q*s)*t: q*s
//    is exact (numerics.md §1), so only the multiplication by t rounds.
#pragma once

#include <cstdint>

#include "quartet/numerics/e2m1.h"
#include "quartet/numerics/e4m3.h"
#include "quartet/numerics/e8m0.h"
#include "quartet/numerics/group_math.h"
#include "quartet/numerics/host_device.h"

namespace quartet {

inline constexpr int kNvGroup = 16;  // NVFP4 elements per E4M3 scale
inline constexpr int kMxGroup = 32;  // MXFP4 elements per E8M0 scale
inline constexpr int kEdenBlockGroups = 8;  // MS-EDEN research form: one correction per 128

// An NVFP4 tensor whose amax is below 2^-96 is quantized as if it were all zeros: below that,
// t * (smallest block scale) is no longer a normal float and 1/(s*t) would overflow.
inline constexpr float kTinyAmax = 1.26217745e-29f;  // 2^-96

// Per-tensor constants, computed on the host (CPU backend) or by a one-thread step (GPU).
struct TwoLevelScale {
  float t = 1.0f;      // FP32 tensor scale (decode)
  float k_enc = 1.0f;  // block scale before E4M3 rounding = group amax * k_enc
};

// RTN, square 16x16 and SR: t = amax / (448 V), k_enc = 1 / (V t), V = val_max.
QUARTET_HD TwoLevelScale rtn_tensor_scale(float amax, float val_max) {
  TwoLevelScale s;
  s.t = amax == 0.0f ? 1.0f : fdiv(amax, fmul(kE4M3Max, val_max));
  s.k_enc = frcp(fmul(val_max, s.t));
  return s;
}

// Block scale as an E4M3 value: RNE(m * k_enc), with a scale that rounds to 0 replaced by 1.
QUARTET_HD float block_scale_rne(float group_amax, float k_enc) {
  const float s = e4m3_round_rne(fmul(group_amax, k_enc));
  return s == 0.0f ? 1.0f : s;
}

QUARTET_HD float code_multiplier(float block_scale, float t) { return frcp(fmul(block_scale, t)); }

QUARTET_HD float dequantize_code(std::uint8_t code, float block_scale, float t) {
  return fmul(fmul(e2m1_decode(code), block_scale), t);
}

template <int N>
QUARTET_HD void encode_group_sr(const float* y, float r, const std::uint16_t* random_bits,
                                std::uint8_t* codes) {
  for (int i = 0; i < N; ++i) codes[i] = e2m1_encode_sr(fmul(y[i], r), random_bits[i]);
}

// RTN (and square 16x16 once the tile amax is known): returns the block scale (E4M3 value).
// block_values, when given, receives each element's e2m1 value times that scale (exact).
QUARTET_HD float rtn_group(const float* y, float group_amax, const TwoLevelScale& ts, std::uint8_t* codes,
                           float* block_values = nullptr) {
  const float s = block_scale_rne(group_amax, ts.k_enc);
  const float r = code_multiplier(s, ts.t);
  for (int i = 0; i < kNvGroup; ++i) {
    const float q = e2m1_round_rne(fmul(y[i], r), &codes[i]);
    if (block_values) block_values[i] = fmul(q, s);
  }
  return s;
}

// SR with headroom: as RTN for the scale, stochastic rounding for the elements. Elements
// whose scaled magnitude exceeds 6 (possible only by FP32 rounding, or when the block scale
// is an E4M3 subnormal) saturate.
QUARTET_HD float sr_group(const float* y, const TwoLevelScale& ts, const std::uint16_t* random_bits,
                          std::uint8_t* codes) {
  const float s = block_scale_rne(group_absmax<kNvGroup>(y), ts.k_enc);
  encode_group_sr<kNvGroup>(y, code_multiplier(s, ts.t), random_bits, codes);
  return s;
}

// 4/6: t = amax / (6 * 256); candidate scales for block maxima 6 and 4.
struct FourOverSixScale {
  float t = 1.0f;
  float inv_t = 1.0f;  // 1 / t
  float k6 = 1.0f;     // 1 / (6 t)
  float k4 = 1.0f;     // 1 / (4 t)
};

QUARTET_HD FourOverSixScale four_over_six_tensor_scale(float amax) {
  FourOverSixScale s;
  s.t = amax == 0.0f ? 1.0f : fdiv(amax, 1536.0f);
  s.inv_t = frcp(s.t);
  s.k6 = frcp(fmul(6.0f, s.t));
  s.k4 = frcp(fmul(4.0f, s.t));
  return s;
}

// One candidate scale s of 4/6: the RNE grid magnitudes q_i of |y_i| r, r = 1/(s t), and the
// squared error sum (|y_i| / t - q_i s)^2 in tree order: the error in units of the tensor scale
// t (the ranking of candidate scales is the same as in absolute units, and the squares neither
// overflow for huge tensors nor underflow for tiny ones). Signs are left out: y_i / t and its
// rounding share one, and RNE is symmetric, so every difference is the signed one up to its
// sign and the squares are the same bit for bit. abs_y_over_t holds the |y_i| / t both
// candidates share.
QUARTET_HD float four_over_six_candidate(const float* y, const float* abs_y_over_t, float s, float t, float* q) {
  const float r = code_multiplier(s, t);
  float sq[kNvGroup];
  for (int i = 0; i < kNvGroup; ++i) {
    q[i] = e2m1_round_magnitude(fmul(fabs_bits(y[i]), r));
    const float d = fadd_exact_product(-q[i], s, abs_y_over_t[i]);  // |y|/t - q s, with q s exact
    sq[i] = fmul(d, d);
  }
  return tree_sum<kNvGroup>(sq);
}

// Quantizes with both candidate scales (RNE) and keeps the 4-scale only if its squared error
// is strictly smaller; only the kept candidate is encoded. Returns the chosen block scale.
// block_values, when given, receives each element's e2m1 value times that scale (exact).
QUARTET_HD float four_over_six_group(const float* y, const FourOverSixScale& ts, std::uint8_t* codes,
                                     float* block_values = nullptr) {
  const float m = group_absmax<kNvGroup>(y);
  const float s6 = block_scale_rne(m, ts.k6);
  const float s4 = block_scale_rne(m, ts.k4);
  float abs_y_over_t[kNvGroup];
  for (int i = 0; i < kNvGroup; ++i) abs_y_over_t[i] = fmul(fabs_bits(y[i]), ts.inv_t);
  float q6[kNvGroup], q4[kNvGroup];
  const float err6 = four_over_six_candidate(y, abs_y_over_t, s6, ts.t, q6);
  const float err4 = four_over_six_candidate(y, abs_y_over_t, s4, ts.t, q4);
  const bool four = err4 < err6;
  const float s = four ? s4 : s6;
  for (int i = 0; i < kNvGroup; ++i) {
    const float q = four ? q4[i] : q6[i];
    codes[i] = static_cast<std::uint8_t>(e2m1_sign_code_bit(y[i]) | e2m1_code_of_magnitude(q));
    if (block_values) block_values[i] = bits_float(float_bits(fmul(q, s)) | (float_bits(y[i]) & 0x80000000u));
  }
  return s;
}

// ---- MS-EDEN ----------------------------------------------------------------------------

struct EdenPartialSums {
  float num = 0.0f;  // sum of v_i^2
  float den = 0.0f;  // sum of v_i q_i
};

// Rounds v_i = y_i r to nearest and returns the sums of the EDEN correction, in tree order.
QUARTET_HD EdenPartialSums eden_encode_group(const float* y, float r, std::uint8_t* codes) {
  float vv[kNvGroup], vq[kNvGroup];
  for (int i = 0; i < kNvGroup; ++i) {
    // |v| and the grid magnitude of its rounding: v q = |v| |q| and v^2 = |v|^2 bit for bit.
    const float v = fmul(fabs_bits(y[i]), r);
    const E2M1Sum rounded = e2m1_rne_sum(v);
    codes[i] = static_cast<std::uint8_t>(e2m1_sign_code_bit(y[i]) | rounded.code3);
    vv[i] = fmul(v, v);
    vq[i] = fmul(v, fsub(rounded.s, rounded.c));
  }
  return EdenPartialSums{tree_sum<kNvGroup>(vv), tree_sum<kNvGroup>(vq)};
}

// The EDEN correction S = sum v^2 / sum v q from its two sums (1 when the denominator is 0).
QUARTET_HD float eden_correction(float num, float den) { return den == 0.0f ? 1.0f : fdiv(num, den); }

// Canonical form, pass 1 (per 16-group correction). `eden_scale` is s = 6 (1/h) / clip
// (6 * 16/17 / 0.93 by default). Returns the provisional corrected scale c_g = sigma4 * S_g
// in FP32. A group whose sigma4 is not a normal float (only possible for group maxima below
// about 7.8e-38) is flushed: codes 0, c_g = 0.
QUARTET_HD float ms_eden_g16_group(const float* y, float group_amax, float eden_scale, std::uint8_t* codes) {
  const float sigma = fdiv(group_amax, eden_scale);
  const float sigma4 = bits_float(float_bits(sigma) & 0xFFF80000u);  // 4 mantissa bits, RTZ
  if (sigma4 < kFloatMinNormal) {
    for (int i = 0; i < kNvGroup; ++i) codes[i] = 0;
    return 0.0f;
  }
  const EdenPartialSums sums = eden_encode_group(y, frcp(sigma4), codes);
  return fmul(sigma4, eden_correction(sums.num, sums.den));
}

QUARTET_HD float ms_eden_g16_group(const float* y, float eden_scale, std::uint8_t* codes) {
  return ms_eden_g16_group(y, group_absmax<kNvGroup>(y), eden_scale, codes);
}

// Canonical form, pass 2: t = M / 256 from the largest c_g of the tensor (M = 0 gives t = 1),
// then each c_g / t is stochastically rounded onto the E4M3 grid, so E[e_g * t] = c_g.
QUARTET_HD float ms_eden_g16_tensor_scale(float max_corrected_scale) {
  return max_corrected_scale == 0.0f ? 1.0f : fmul(max_corrected_scale, 1.0f / 256.0f);
}

QUARTET_HD float ms_eden_g16_scale(float corrected_scale, float t, std::uint16_t random_bits) {
  return e4m3_round_sr(fdiv(corrected_scale, t), random_bits);
}

// Research form: t = amax / (255.99 s); sigma_g = E4M3_RNE(m_g / (t s)) (0 -> 1); one EDEN
// correction per 128 elements (8 groups); each sigma_g * S is stochastically rounded.
struct EdenResearchScale {
  float t = 1.0f;
  float k_enc = 1.0f;  // 1 / (t s)
};

// t_divisor = 255.99 * s, rounded once to FP32 from double on the host.
QUARTET_HD EdenResearchScale ms_eden_g128_tensor_scale(float amax, float eden_scale, float t_divisor) {
  EdenResearchScale s;
  s.t = amax == 0.0f ? 1.0f : fdiv(amax, t_divisor);
  s.k_enc = frcp(fmul(s.t, eden_scale));
  return s;
}

// Pass 1 for one group: returns sigma_g (E4M3 value), writes codes and the partial sums.
QUARTET_HD float ms_eden_g128_group(const float* y, const EdenResearchScale& ts, std::uint8_t* codes,
                                    EdenPartialSums* partial) {
  const float sigma = block_scale_rne(group_absmax<kNvGroup>(y), ts.k_enc);
  *partial = eden_encode_group(y, code_multiplier(sigma, ts.t), codes);
  return sigma;
}

// The correction of one 128-block from its 8 groups' partial sums (absent groups of a
// partial last block contribute zeros), combined in tree order.
QUARTET_HD float ms_eden_g128_correction(const EdenPartialSums* partials) {
  float num[kEdenBlockGroups], den[kEdenBlockGroups];
  for (int g = 0; g < kEdenBlockGroups; ++g) {
    num[g] = partials[g].num;
    den[g] = partials[g].den;
  }
  return eden_correction(tree_sum<kEdenBlockGroups>(num), tree_sum<kEdenBlockGroups>(den));
}

QUARTET_HD float ms_eden_g128_scale(float sigma, float correction, std::uint16_t random_bits) {
  return e4m3_round_sr(fmul(sigma, correction), random_bits);
}

// ---- MXFP4 (Quartet I) ------------------------------------------------------------------

inline constexpr float kQuestClip = 0.48708f;  // 2.92247856 / 6, the MSE-optimal Gaussian clip

// 2^-(e-127) for an E8M0 scale byte: the exact multiplier that maps values to codes.
QUARTET_HD float e8m0_inverse(std::uint8_t scale) { return e8m0_decode(static_cast<std::uint8_t>(254u - scale)); }

// QuEST forward on one 32-group (already through the fixed Hadamard-32): scale
// 2^floor(log2(0.48708 sigma + 1e-8)), sigma the population std; codes RNE; trust bit i set
// iff |y_i / X| < 6. Returns the E8M0 scale byte.
//
// The mean and spread are computed on the group scaled by the power of two P that brings its
// maximum into [1, 2): exact scaling, so the result equals the direct formula wherever that
// neither overflows (groups beyond ~1e19) nor underflows, and stays finite where it would.
//
// The steps are separate functions so that a GPU layout holding the group in two threads (16
// elements each) performs the same operations: each half's tree_sum<16>, then one addition of
// the two halves, is tree_sum<32>'s order.

// floor(log2 m) for the group maximum m, bounded to the exponents whose power of two is a
// normal float in both directions.
QUARTET_HD int quest_exponent(float group_amax) {
  const int e = group_amax < kFloatMinNormal ? -126 : floor_log2_normal(group_amax);
  return e > 126 ? 126 : e;
}

// Sum of N elements of the group scaled by 2^-e (the mean's numerator, or part of it).
template <int N>
QUARTET_HD float quest_scaled_sum(const float* y, int e) {
  const float p = pow2_normal(-e);
  float scaled[N];
  for (int i = 0; i < N; ++i) scaled[i] = fmul(y[i], p);
  return tree_sum<N>(scaled);
}

// Sum of squared deviations from the group mean (mean = scaled sum / 32) of N elements.
template <int N>
QUARTET_HD float quest_scaled_square_sum(const float* y, int e, float mean) {
  const float p = pow2_normal(-e);
  float sq[N];
  for (int i = 0; i < N; ++i) {
    // y p - mean. The scaling by the power of two p is exact unless y p is subnormal; then the
    // FMA and the two-step form can differ only where |mean| < 2^-100 (a larger mean leaves no
    // rounding tie within reach of a subnormal's last bit), so |d| < 2^-99 and d^2 underflows
    // to 0 either way: the squares agree bit for bit.
    const float d = fadd_exact_product(y[i], p, -mean);
    sq[i] = fmul(d, d);
  }
  return tree_sum<N>(sq);
}

QUARTET_HD float quest_mean(float scaled_sum) { return fmul(scaled_sum, 1.0f / 32.0f); }

// The E8M0 scale from the whole group's sum of squared (scaled) deviations.
QUARTET_HD std::uint8_t quest_scale(float scaled_square_sum, int e) {
  const float sigma = fmul(fsqrt(fmul(scaled_square_sum, 1.0f / 32.0f)), pow2_normal(e));
  return e8m0_encode_floor(fadd(fmul(kQuestClip, sigma), 1e-8f));
}

// Codes of N elements under the scale, and their trust bits (bit i for element i).
template <int N>
QUARTET_HD std::uint32_t quest_encode(const float* y, std::uint8_t scale, std::uint8_t* codes) {
  const float inv = e8m0_inverse(scale);
  std::uint32_t trust = 0;
  for (int i = 0; i < N; ++i) {
    const float v = fmul(y[i], inv);  // exact: a power-of-two scaling
    codes[i] = e2m1_encode_rne(v);
    trust |= (fabs_bits(v) < kE2M1Max ? 1u : 0u) << i;
  }
  return trust;
}

QUARTET_HD std::uint8_t quest_group(const float* y, std::uint8_t* codes, std::uint32_t* trust_bits) {
  const int e = quest_exponent(group_absmax<kMxGroup>(y));
  const float mean = quest_mean(quest_scaled_sum<kMxGroup>(y, e));
  const std::uint8_t scale = quest_scale(quest_scaled_square_sum<kMxGroup>(y, e, mean), e);
  *trust_bits = quest_encode<kMxGroup>(y, scale, codes);
  return scale;
}

// Quartet I backward quantizer: X = 2^floor(log2 m_g), code = round(3 y / X), tensor factor
// t = 1/3, so nothing clips. random_bits == nullptr selects RNE, otherwise SR.
inline constexpr float kMxBackwardTensorScale = 0.333333343f;  // FP32(1/3)

QUARTET_HD std::uint8_t mxfp4_backward_scale(float group_amax) { return e8m0_encode_floor(group_amax); }

// Codes of N elements of a group under its scale.
template <int N>
QUARTET_HD void mxfp4_backward_encode(const float* y, std::uint8_t scale, const std::uint16_t* random_bits,
                                      std::uint8_t* codes) {
  const float inv = e8m0_inverse(scale);
  for (int i = 0; i < N; ++i) {
    const float v = fmul(fmul(y[i], inv), 3.0f);
    codes[i] = random_bits ? e2m1_encode_sr(v, random_bits[i]) : e2m1_encode_rne(v);
  }
}

QUARTET_HD std::uint8_t mxfp4_backward_group(const float* y, const std::uint16_t* random_bits,
                                             std::uint8_t* codes) {
  const std::uint8_t scale = mxfp4_backward_scale(group_absmax<kMxGroup>(y));
  mxfp4_backward_encode<kMxGroup>(y, scale, random_bits, codes);
  return scale;
}

QUARTET_HD float dequantize_mx_code(std::uint8_t code, std::uint8_t scale, float t) {
  return fmul(fmul(e2m1_decode(code), e8m0_decode(scale)), t);
}

}  // namespace quartet

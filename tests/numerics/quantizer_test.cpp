// Every quantizer against a double-precision model written from numerics.md §5–6.
//
// The model evaluates each formula in double; the implementation evaluates it in FP32 in a
// fixed order. The two can legitimately pick different grid points only when the model's
// value lies within a hair of a rounding midpoint (a tie zone of relative width kTieZone,
// far wider than FP32's 6e-8 relative error of a few operations). Such cases are accepted
// either way and counted; anything else is a failure.
#include <gtest/gtest.h>

#include <cmath>

#include "quartet/error.h"
#include "quartet/numerics/group_quantizers.h"
#include "quartet/numerics/quantizer.h"
#include "support/test_support.h"

namespace quartet {
namespace {

constexpr double kTieZone = 1e-5;
const std::vector<double> kE2M1(testing::kE2M1Grid.begin(), testing::kE2M1Grid.end());
const std::vector<double> kE4M3 = testing::e4m3_nonnegative_values();

// True if grid index `got` is a correct round-to-nearest of v >= 0, allowing the other
// neighbour inside the tie zone around a midpoint.
bool rne_consistent(double v, int got, const std::vector<double>& grid, int* tie_cases = nullptr) {
  const int want = testing::round_to_grid_rne(v, grid);
  if (got == want) return true;
  if (std::abs(got - want) != 1) return false;
  const int lo = std::min(got, want), hi = lo + 1;
  const double mid = (grid[lo] + grid[hi]) / 2;
  const bool tie = std::fabs(v - mid) <= kTieZone * mid;
  if (tie && tie_cases) ++*tie_cases;
  return tie;
}

// True if `got` is one of the two grid neighbours of v (or v itself), allowing the next
// neighbour when v sits within the tie zone of a grid point.
bool sr_consistent(double v, int got, const std::vector<double>& grid) {
  const int lo = testing::floor_grid_index(v, grid);
  if (got == lo || got == lo + 1) return true;
  if (got == lo - 1) return std::fabs(v - grid[lo]) <= kTieZone * grid[lo];
  if (got == lo + 2) return std::fabs(v - grid[lo + 1]) <= kTieZone * grid[lo + 1];
  return false;
}

int e4m3_index(float scale) { return testing::round_to_grid_rne(scale, kE4M3); }  // exact for grid values
constexpr int kE4M3OneIndex = 0x38;  // a block scale that rounds to 0 is replaced by 1.0

struct Case {
  std::int64_t rows, cols;
  std::vector<float> x;
};

Case make_case(std::int64_t rows, std::int64_t cols, std::uint64_t seed) {
  return {rows, cols, testing::scaled_gaussian_matrix(rows, cols, seed, 10.0)};
}

// The quantizer's input in its padded layout (no rotation in these tests).
double y_at(const Case& c, std::int64_t r, std::int64_t col) {
  return col < c.cols ? c.x[static_cast<std::size_t>(r * c.cols + col)] : 0.0;
}

double amax_of(const Case& c) {
  double m = 0;
  for (float v : c.x) m = std::max(m, std::fabs(static_cast<double>(v)));
  return m;
}

double group_amax(const Case& c, std::int64_t r, std::int64_t g, int size) {
  double m = 0;
  for (int i = 0; i < size; ++i) m = std::max(m, std::fabs(y_at(c, r, g * size + i)));
  return m;
}

QuantizedTensor run(const Case& c, QuantizerSpec spec, RandomContext rng = {1, 2, 3}) {
  return quantize(ConstMatrixView(c.x.data(), c.rows, c.cols), spec, Rotation::none(), rng);
}

// Codes of an NVFP4 group must round y / (s t) to nearest, with y's sign.
void expect_rne_codes(const Case& c, const QuantizedTensor& q, std::int64_t r, std::int64_t g, int* ties) {
  const double st = static_cast<double>(q.scale_value(r, g)) * q.tensor_scale;
  for (int i = 0; i < q.group_size(); ++i) {
    const std::int64_t col = g * q.group_size() + i;
    const double y = y_at(c, r, col);
    const std::uint8_t code = q.code(r, col);
    ASSERT_TRUE(rne_consistent(std::fabs(y) / st, code & 7, kE2M1, ties))
        << "row " << r << " col " << col << ": y/(s t) = " << y / st << " got code " << int(code);
    if ((code & 7) != 0) {
      ASSERT_EQ(code >> 3, y < 0 ? 1 : 0) << "sign of (" << r << ", " << col << ")";
    }
  }
}

TEST(Quantizer, RtnScalesAndCodesFollowTheSpec) {
  for (double clip : {1.0, 0.9}) {
    const Case c = make_case(37, 128, 1);
    QuantizerSpec spec = QuantizerSpec::defaults(QuantizerKind::rtn);
    spec.clip = clip;
    const QuantizedTensor q = run(c, spec);
    const double v_max = 6.0 / clip;
    const double t = amax_of(c) / (448.0 * v_max);
    EXPECT_NEAR(q.tensor_scale, t, 1e-6 * t);
    int ties = 0;
    for (std::int64_t r = 0; r < c.rows; ++r) {
      for (std::int64_t g = 0; g < q.scale_cols(); ++g) {
        const double raw = group_amax(c, r, g, 16) / v_max / q.tensor_scale;
        const int got = e4m3_index(q.scale_value(r, g));
        ASSERT_TRUE(rne_consistent(raw, got, kE4M3, &ties) || (got == kE4M3OneIndex && testing::round_to_grid_rne(raw, kE4M3) == 0))
            << "row " << r << " group " << g << " raw scale " << raw;
        expect_rne_codes(c, q, r, g, &ties);
      }
    }
    EXPECT_LT(ties, 5);
  }
}

TEST(Quantizer, FourOverSixKeepsTheScaleWithTheSmallerError) {
  const Case c = make_case(64, 128, 2);
  const QuantizedTensor q = run(c, QuantizerSpec::defaults(QuantizerKind::four_over_six));
  const double t = amax_of(c) / (6.0 * 256.0);
  EXPECT_NEAR(q.tensor_scale, t, 1e-6 * t);
  int chose4 = 0, ties = 0;
  for (std::int64_t r = 0; r < c.rows; ++r) {
    for (std::int64_t g = 0; g < q.scale_cols(); ++g) {
      const double m = group_amax(c, r, g, 16);
      double err[2];
      double scale[2];
      for (int k = 0; k < 2; ++k) {  // k = 0: block max 6, k = 1: block max 4
        const double raw = m / (k == 0 ? 6.0 : 4.0) / q.tensor_scale;
        double s = kE4M3[static_cast<std::size_t>(testing::round_to_grid_rne(raw, kE4M3))];
        if (s == 0) s = 1;
        scale[k] = s;
        err[k] = 0;
        for (int i = 0; i < 16; ++i) {
          const double y = y_at(c, r, g * 16 + i);
          const double v = std::fabs(y) / (s * q.tensor_scale);
          const double deq = std::copysign(kE2M1[static_cast<std::size_t>(testing::round_to_grid_rne(v, kE2M1))], y) * s * q.tensor_scale;
          err[k] += (y - deq) * (y - deq);
        }
      }
      const double got = q.scale_value(r, g);
      const bool near_tie = std::fabs(err[0] - err[1]) <= 1e-5 * err[0];
      if (!near_tie) {
        ASSERT_EQ(got, err[1] < err[0] ? scale[1] : scale[0]) << "row " << r << " group " << g;
      }
      chose4 += got == scale[1] && scale[1] != scale[0];
      expect_rne_codes(c, q, r, g, &ties);
    }
  }
  EXPECT_GT(chose4, 0);                       // both choices occur on Gaussian data
  EXPECT_LT(chose4, c.rows * q.scale_cols());
}

TEST(Quantizer, Square16SharesOneScalePerTileAndTransposesExactly) {
  const Case c = make_case(40, 48, 3);  // rows not a multiple of 16
  const QuantizedTensor q = run(c, QuantizerSpec::defaults(QuantizerKind::square16));
  EXPECT_TRUE(q.square_blocks);
  const double v_max = 6.0;
  int ties = 0;
  for (std::int64_t r = 0; r < c.rows; ++r) {
    for (std::int64_t g = 0; g < q.scale_cols(); ++g) {
      double m = 0;
      for (std::int64_t rr = r / 16 * 16; rr < std::min<std::int64_t>(c.rows, r / 16 * 16 + 16); ++rr) {
        m = std::max(m, group_amax(c, rr, g, 16));
      }
      ASSERT_TRUE(rne_consistent(m / v_max / q.tensor_scale, e4m3_index(q.scale_value(r, g)), kE4M3, &ties));
      ASSERT_EQ(q.scale_byte(r, g), q.scale_byte(r / 16 * 16, g));
      expect_rne_codes(c, q, r, g, &ties);
    }
  }
  // Quantizing the transpose gives exactly the transposed tensor.
  std::vector<float> xt(c.x.size());
  for (std::int64_t r = 0; r < c.rows; ++r)
    for (std::int64_t col = 0; col < c.cols; ++col) xt[col * c.rows + r] = c.x[r * c.cols + col];
  const QuantizedTensor qt = quantize(ConstMatrixView(xt.data(), c.cols, c.rows),
                                      QuantizerSpec::defaults(QuantizerKind::square16), Rotation::none(), {});
  const QuantizedTensor transposed = transpose_square_blocks(q);
  EXPECT_EQ(transposed.codes, qt.codes);
  EXPECT_EQ(transposed.scales, qt.scales);
  EXPECT_EQ(transposed.tensor_scale, qt.tensor_scale);
  const std::vector<float> a = dequantize(q), b = dequantize(transposed);
  for (std::int64_t r = 0; r < c.rows; ++r)
    for (std::int64_t col = 0; col < c.cols; ++col) ASSERT_EQ(a[r * c.cols + col], b[col * c.rows + r]);
}

TEST(Quantizer, SrHasHeadroomAndUsesTheDocumentedRandomBits) {
  const Case c = make_case(33, 64, 4);
  const RandomContext rng{11, 22, 33};
  const QuantizedTensor q = run(c, QuantizerSpec::defaults(QuantizerKind::sr), rng);
  const double v_max = 6.0 * 16.0 / 17.0;
  EXPECT_NEAR(q.tensor_scale, amax_of(c) / (448.0 * v_max), 1e-6 * q.tensor_scale);
  int ties = 0;
  for (std::int64_t r = 0; r < c.rows; ++r) {
    for (std::int64_t g = 0; g < q.scale_cols(); ++g) {
      const double s = q.scale_value(r, g);
      ASSERT_TRUE(rne_consistent(group_amax(c, r, g, 16) / v_max / q.tensor_scale, e4m3_index(static_cast<float>(s)), kE4M3, &ties));
      for (int i = 0; i < 16; ++i) {
        const std::int64_t col = g * 16 + i;
        const double v = std::fabs(y_at(c, r, col)) / (s * q.tensor_scale);
        if (s >= kE4M3MinNormal) {
          ASSERT_LE(v, 6.0 * (1 + 1e-6)) << "headroom 17/16: nothing clips";
        }
        ASSERT_TRUE(sr_consistent(v, q.code(r, col) & 7, kE2M1)) << r << "," << col;
        // Bit assignment (philox.h): element c of row r uses decision c.
        const float mult = frcp(fmul(static_cast<float>(s), q.tensor_scale));
        const auto y = static_cast<float>(y_at(c, r, col));
        ASSERT_EQ(q.code(r, col), e2m1_encode_sr(fmul(y, mult), random_decision_bits(rng, static_cast<std::uint32_t>(r), static_cast<std::uint32_t>(col))));
      }
    }
  }
}

TEST(Quantizer, MsEdenCanonicalFormFollowsTheSpec) {
  const Case c = make_case(24, 128, 5);
  const RandomContext rng{3, 4, 5};
  const QuantizedTensor q = run(c, QuantizerSpec::defaults(QuantizerKind::ms_eden_g16), rng);
  const double s = 6.0 * (16.0 / 17.0) / 0.93;
  // Pass 1 in double (sigma4 is defined on FP32 bits, so it is formed from FP32 sigma).
  std::vector<double> corrected;
  double max_c = 0;
  int ties = 0;
  for (std::int64_t r = 0; r < c.rows; ++r) {
    for (std::int64_t g = 0; g < q.scale_cols(); ++g) {
      const float sigma = static_cast<float>(group_amax(c, r, g, 16)) / static_cast<float>(s);
      const double sigma4 = testing::float_from_bits(testing::bits_from_float(sigma) & 0xFFF80000u);
      double num = 0, den = 0;
      for (int i = 0; i < 16; ++i) {
        const double v = y_at(c, r, g * 16 + i) / sigma4;
        const std::uint8_t code = q.code(r, g * 16 + i);
        ASSERT_TRUE(rne_consistent(std::fabs(v), code & 7, kE2M1, &ties)) << "v = " << v;
        num += v * v;
        den += v * e2m1_decode(code);
      }
      corrected.push_back(sigma4 * (den == 0 ? 1.0 : num / den));
      max_c = std::max(max_c, corrected.back());
    }
  }
  EXPECT_NEAR(q.tensor_scale, max_c / 256.0, 1e-6 * q.tensor_scale);
  // Pass 2: each scale is one of the two E4M3 neighbours of c_g / t.
  for (std::int64_t r = 0, k = 0; r < c.rows; ++r) {
    for (std::int64_t g = 0; g < q.scale_cols(); ++g, ++k) {
      const double target = corrected[static_cast<std::size_t>(k)] / q.tensor_scale;
      ASSERT_LE(target, 256.0 * (1 + 1e-6));
      ASSERT_TRUE(sr_consistent(target, e4m3_index(q.scale_value(r, g)), kE4M3)) << "target " << target;
    }
  }
  EXPECT_LT(ties, 5);
}

TEST(Quantizer, MsEdenResearchFormFollowsTheSpec) {
  const Case c = make_case(16, 256, 6);
  const QuantizedTensor q = run(c, QuantizerSpec::defaults(QuantizerKind::ms_eden_g128), {7, 8, 9});
  const double s = 6.0 * (16.0 / 17.0) / 0.93;
  const double t = amax_of(c) / (255.99 * s);
  EXPECT_NEAR(q.tensor_scale, t, 1e-6 * t);
  int ties = 0, sigma_ties = 0;
  for (std::int64_t r = 0; r < c.rows; ++r) {
    for (std::int64_t b = 0; b < 2; ++b) {  // two 128-blocks per row
      double num = 0, den = 0;
      double sigma[8];
      for (int k = 0; k < 8; ++k) {
        const std::int64_t g = b * 8 + k;
        const double raw = group_amax(c, r, g, 16) / (q.tensor_scale * s);
        const int idx = testing::round_to_grid_rne(raw, kE4M3);
        sigma[k] = idx == 0 ? 1.0 : kE4M3[static_cast<std::size_t>(idx)];
        if (std::fabs(raw - (kE4M3[idx] + kE4M3[std::min(idx + 1, 126)]) / 2) < kTieZone * raw) ++sigma_ties;
        for (int i = 0; i < 16; ++i) {
          const double v = y_at(c, r, g * 16 + i) / (sigma[k] * q.tensor_scale);
          const std::uint8_t code = q.code(r, g * 16 + i);
          ASSERT_TRUE(rne_consistent(std::fabs(v), code & 7, kE2M1, &ties));
          num += v * v;
          den += v * e2m1_decode(code);
        }
      }
      const double correction = den == 0 ? 1.0 : num / den;
      for (int k = 0; k < 8; ++k) {
        ASSERT_TRUE(sr_consistent(sigma[k] * correction, e4m3_index(q.scale_value(r, b * 8 + k)), kE4M3))
            << "row " << r << " group " << b * 8 + k;
      }
    }
  }
  EXPECT_EQ(sigma_ties, 0);
}

TEST(Quantizer, QuestScaleCodesAndTrustMask) {
  const Case c = make_case(20, 96, 7);
  const QuantizedTensor q = run(c, QuantizerSpec::defaults(QuantizerKind::mxfp4_quest));
  ASSERT_EQ(q.format, ElementFormat::mxfp4);
  EXPECT_EQ(q.tensor_scale, 1.0f);
  int ties = 0, clipped = 0;
  for (std::int64_t r = 0; r < c.rows; ++r) {
    for (std::int64_t g = 0; g < q.scale_cols(); ++g) {
      double mean = 0, var = 0;
      for (int i = 0; i < 32; ++i) mean += y_at(c, r, g * 32 + i) / 32;
      for (int i = 0; i < 32; ++i) var += (y_at(c, r, g * 32 + i) - mean) * (y_at(c, r, g * 32 + i) - mean) / 32;
      const double a = 0.48708 * std::sqrt(var) + 1e-8;
      const double x_scale = std::exp2(std::floor(std::log2(a)));
      ASSERT_EQ(q.scale_value(r, g), x_scale) << "row " << r << " group " << g << " (a = " << a << ")";
      for (int i = 0; i < 32; ++i) {
        const std::int64_t col = g * 32 + i;
        const double v = y_at(c, r, col) / x_scale;  // exact
        ASSERT_TRUE(rne_consistent(std::fabs(v), q.code(r, col) & 7, kE2M1, &ties));
        ASSERT_EQ(q.trusted(r, col), std::fabs(v) < 6.0) << r << "," << col;
        clipped += std::fabs(v) >= 6.0;
      }
    }
  }
  EXPECT_EQ(ties, 0);    // x / X is exact: no rounding can disagree
  EXPECT_GT(clipped, 0);  // the 0.48708 sigma clip does clip some Gaussian values
}

TEST(Quantizer, MxBackwardRoundsThreeXOverXScale) {
  const Case c = make_case(20, 64, 8);
  for (QuantizerKind kind : {QuantizerKind::mxfp4_rtn, QuantizerKind::mxfp4_sr}) {
    const QuantizedTensor q = run(c, QuantizerSpec::defaults(kind));
    EXPECT_EQ(q.tensor_scale, static_cast<float>(1.0 / 3.0));
    int ties = 0;
    for (std::int64_t r = 0; r < c.rows; ++r) {
      for (std::int64_t g = 0; g < q.scale_cols(); ++g) {
        const double x_scale = std::exp2(std::floor(std::log2(group_amax(c, r, g, 32))));
        ASSERT_EQ(q.scale_value(r, g), x_scale);
        for (int i = 0; i < 32; ++i) {
          const double v = 3.0 * std::fabs(y_at(c, r, g * 32 + i)) / x_scale;
          ASSERT_LT(v, 6.0);  // the x3 range: nothing clips
          const int code = q.code(r, g * 32 + i) & 7;
          if (kind == QuantizerKind::mxfp4_rtn) {
            ASSERT_TRUE(rne_consistent(v, code, kE2M1, &ties));
          } else {
            ASSERT_TRUE(sr_consistent(v, code, kE2M1));
          }
        }
      }
    }
    EXPECT_LT(ties, 3);
  }
}

TEST(Quantizer, DeterministicFromTheRandomContextAndFreshPerCall) {
  const Case c = make_case(8, 128, 9);
  for (QuantizerKind kind : kAllQuantizers) {
    const QuantizerSpec spec = QuantizerSpec::defaults(kind);
    const QuantizedTensor a = run(c, spec, {1, 2, 3}), b = run(c, spec, {1, 2, 3}), other = run(c, spec, {1, 2, 4});
    EXPECT_EQ(a.codes, b.codes) << quantizer_name(kind);
    EXPECT_EQ(a.scales, b.scales) << quantizer_name(kind);
    const bool changed = a.codes != other.codes || a.scales != other.scales;
    EXPECT_EQ(changed, is_stochastic(kind)) << quantizer_name(kind);
  }
}

TEST(Quantizer, RotationIsAppliedBeforeQuantizing) {
  const Case c = make_case(4, 256, 10);
  const Rotation rot = Rotation::random(128, {5, 5, 5});
  std::vector<float> y = c.x;
  rotate_rows(y.data(), c.rows, c.cols, c.cols, rot);
  const QuantizerSpec spec = QuantizerSpec::defaults(QuantizerKind::rtn);
  const QuantizedTensor rotated = quantize(ConstMatrixView(c.x.data(), c.rows, c.cols), spec, rot, {});
  const QuantizedTensor direct = quantize(ConstMatrixView(y.data(), c.rows, c.cols), spec, Rotation::none(), {});
  EXPECT_EQ(rotated.codes, direct.codes);
  EXPECT_EQ(rotated.scales, direct.scales);
  EXPECT_EQ(rotated.rotation_size, 128);
  // dequantize_unrotated undoes the rotation: close to x (4-bit accuracy).
  const std::vector<float> back = dequantize_unrotated(rotated, rot);
  double err = 0, norm = 0;
  for (std::size_t i = 0; i < back.size(); ++i) {
    err += (back[i] - c.x[i]) * (back[i] - c.x[i]);
    norm += c.x[i] * c.x[i];
  }
  EXPECT_LT(err / norm, 0.02);
  EXPECT_THROW(dequantize_unrotated(rotated, Rotation::none()), Error);
}

}  // namespace
}  // namespace quartet

#include "quartet/numerics/gemm.h"

#include <gtest/gtest.h>

#include <cmath>

#include "quartet/error.h"
#include "quartet/numerics/quantizer.h"
#include "support/test_support.h"

namespace quartet {
namespace {

QuantizedTensor quantized(std::int64_t rows, std::int64_t cols, std::uint64_t seed, QuantizerKind kind,
                          const Rotation& rotation = Rotation::none()) {
  const std::vector<float> x = testing::scaled_gaussian_matrix(rows, cols, seed, 4.0);
  return quantize(ConstMatrixView(x.data(), rows, cols), QuantizerSpec::defaults(kind), rotation, RandomContext{seed, 1, 2});
}

// out against a double-precision triple loop over the element-wise dequantized values. An
// FP32 dot product of K exact products accumulated in any order has error at most
// K * 2^-24 * sum |a b| (to first order), and alpha adds one more rounding.
void expect_matches_reference(const QuantizedTensor& a, const QuantizedTensor& b) {
  const std::vector<float> out = gemm_quantized(a, b);
  ASSERT_EQ(static_cast<std::int64_t>(out.size()), a.rows * b.rows);
  const double u = std::ldexp(1.0, -24);
  for (std::int64_t m = 0; m < a.rows; ++m) {
    for (std::int64_t n = 0; n < b.rows; ++n) {
      double ref = 0, magnitude = 0;
      for (std::int64_t k = 0; k < a.cols; ++k) {
        const double p = static_cast<double>(a.value(m, k)) * b.value(n, k);
        ref += p;
        magnitude += std::fabs(p);
      }
      const double bound = (a.padded_cols() + 2) * u * magnitude + 1e-30;
      ASSERT_NEAR(out[static_cast<std::size_t>(m * b.rows + n)], ref, bound) << "(" << m << ", " << n << ")";
    }
  }
}

TEST(Gemm, NvFp4MatchesTheDequantizedProduct) {
  expect_matches_reference(quantized(33, 160, 1, QuantizerKind::rtn), quantized(17, 160, 2, QuantizerKind::four_over_six));
}

TEST(Gemm, MxFp4MatchesTheDequantizedProduct) {
  expect_matches_reference(quantized(9, 96, 3, QuantizerKind::mxfp4_quest), quantized(12, 96, 4, QuantizerKind::mxfp4_rtn));
}

TEST(Gemm, PaddedReductionAndTiledScales) {
  const QuantizedTensor a = quantized(5, 40, 5, QuantizerKind::sr);  // K = 40 is padded to 48
  const QuantizedTensor b = quantized(7, 40, 6, QuantizerKind::ms_eden_g16);
  expect_matches_reference(a, b);
  EXPECT_EQ(gemm_quantized(with_scale_layout(a, ScaleLayout::tiled), b), gemm_quantized(a, b));
}

TEST(Gemm, AlphaIsTheProductOfTensorScalesNotFoldedIntoOperands) {
  QuantizedTensor a = quantized(4, 32, 7, QuantizerKind::rtn);
  QuantizedTensor b = quantized(3, 32, 8, QuantizerKind::rtn);
  const std::vector<float> base = gemm_quantized(a, b);
  a.tensor_scale *= 4.0f;  // an exact power of two: the output scales exactly
  b.tensor_scale *= 0.5f;
  const std::vector<float> scaled = gemm_quantized(a, b);
  for (std::size_t i = 0; i < base.size(); ++i) EXPECT_EQ(scaled[i], base[i] * 2.0f);
}

// With both operands under the same RHT, the rotation cancels: the quantized GEMM estimates
// the product of the original matrices (to FP4 accuracy).
TEST(Gemm, ASharedRotationCancels) {
  const std::int64_t m = 16, n = 8, k = 256;
  const std::vector<float> x = testing::gaussian_matrix(m, k, 9), w = testing::gaussian_matrix(n, k, 10);
  const Rotation rot = Rotation::random(128, RandomContext{1, 2, 3});
  const QuantizerSpec spec = QuantizerSpec::defaults(QuantizerKind::ms_eden_g16);
  const std::vector<float> out = gemm_quantized(quantize(ConstMatrixView(x.data(), m, k), spec, rot, {1, 1, 1}),
                                                quantize(ConstMatrixView(w.data(), n, k), spec, rot, {1, 2, 1}));
  double err = 0, norm = 0;
  for (std::int64_t i = 0; i < m; ++i) {
    for (std::int64_t j = 0; j < n; ++j) {
      double exact = 0;
      for (std::int64_t c = 0; c < k; ++c) exact += static_cast<double>(x[i * k + c]) * w[j * k + c];
      err += (out[i * n + j] - exact) * (out[i * n + j] - exact);
      norm += exact * exact;
    }
  }
  // Each operand carries ~1e-2 relative MSE; the product's relative error is of that order
  // (times sqrt(k) / |<x,w>| ~ 1 for independent Gaussians); 0.1 leaves a wide margin while
  // an uncancelled rotation gives ~1.
  EXPECT_LT(err / norm, 0.1);
  const std::vector<float> mismatched = gemm_quantized(quantize(ConstMatrixView(x.data(), m, k), spec, rot, {1, 1, 1}),
                                                       quantize(ConstMatrixView(w.data(), n, k), spec, Rotation::random(128, {9, 9, 9}), {1, 2, 1}));
  double err_mismatched = 0;
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < n; ++j) {
      double exact = 0;
      for (std::int64_t c = 0; c < k; ++c) exact += static_cast<double>(x[i * k + c]) * w[j * k + c];
      err_mismatched += (mismatched[i * n + j] - exact) * (mismatched[i * n + j] - exact);
    }
  EXPECT_GT(err_mismatched / norm, 0.5);
}

TEST(Gemm, RejectsMismatchedOperands) {
  const QuantizedTensor a = quantized(4, 64, 1, QuantizerKind::rtn);
  EXPECT_THROW(gemm_quantized(a, quantized(4, 48, 2, QuantizerKind::rtn)), Error);
  EXPECT_THROW(gemm_quantized(a, quantized(4, 64, 3, QuantizerKind::mxfp4_rtn)), Error);
  EXPECT_THROW(gemm_quantized(a, quantized(4, 64, 4, QuantizerKind::rtn, Rotation::random(16, {}))), Error);
  QuantizedTensor broken = a;
  broken.scales.resize(3);
  EXPECT_THROW(gemm_quantized(broken, a), Error);
  EXPECT_THROW(gemm_quantized(a, a, nullptr), Error);
}

}  // namespace
}  // namespace quartet

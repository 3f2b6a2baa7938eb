// Independent tests of the reference quantized GEMM (numerics.md §7):
//   out[m][n] = t_A t_B sum_k x^A[m][k] x^B[n][k]  ("TN", both operands K-contiguous).
//
// The reference is a double-precision triple loop over e2m1(code) * scale, built here from
// the tensors' codes and scale bytes with our own decoders. Tolerance: each product of two
// block-scaled values is exact in FP32 (numerics.md §1), so the only errors are the FP32
// accumulation, |fl(sum) - sum| <= gamma_K sum|a_k b_k| for ANY summation order
// (gamma_K = K u / (1 - K u), u = 2^-24), plus the rounding of alpha = t_A t_B and of the final
// multiplication: |out - ref| <= (gamma_K + 3u) alpha sum_k |a_k b_k|.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "quartet/error.h"
#include "quartet/numerics/gemm.h"
#include "quartet/numerics/quantizer.h"

namespace {

using quartet::QuantizedTensor;
using quartet::QuantizerKind;
using quartet::QuantizerSpec;
using quartet::RandomContext;
using quartet::Rotation;

constexpr double kE2M1[8] = {0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0};
double e2m1_value(std::uint8_t code) { return (code & 8u) ? -kE2M1[code & 7u] : kE2M1[code & 7u]; }

double block_scale(const QuantizedTensor& q, std::int64_t r, std::int64_t g) {
  const std::uint8_t b = q.scale_byte(r, g);
  if (q.format == quartet::ElementFormat::mxfp4) return std::ldexp(1.0, int(b) - 127);
  const unsigned e = (b >> 3) & 15u, m = b & 7u;
  return e == 0 ? std::ldexp(double(m), -9) : std::ldexp(1.0 + m / 8.0, int(e) - 7);
}

double block_scaled(const QuantizedTensor& q, std::int64_t r, std::int64_t c) {
  return e2m1_value(q.code(r, c)) * block_scale(q, r, c / q.group_size());
}

std::vector<float> gaussian(std::int64_t rows, std::int64_t cols, std::uint32_t seed, float scale) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> x(static_cast<std::size_t>(rows * cols));
  for (auto& v : x) v = d(gen);
  return x;
}

QuantizedTensor quantize(const std::vector<float>& x, std::int64_t rows, std::int64_t cols, QuantizerKind kind,
                         const Rotation& rot = Rotation::none()) {
  return quartet::quantize(quartet::ConstMatrixView(x.data(), rows, cols), QuantizerSpec::defaults(kind), rot,
                           RandomContext{3u, 1u, 0u});
}

void expect_gemm_matches_reference(const QuantizedTensor& a, const QuantizedTensor& b) {
  const std::vector<float> out = quartet::gemm_quantized(a, b);
  ASSERT_EQ(out.size(), static_cast<std::size_t>(a.rows * b.rows));
  std::vector<float> out2(out.size(), -1.0f);
  quartet::gemm_quantized(a, b, out2.data());
  EXPECT_EQ(out2, out) << "the two overloads disagree";
  const std::int64_t K = a.padded_cols();
  const double u = std::ldexp(1.0, -24), gamma = K * u / (1 - K * u);
  const double alpha = double(a.tensor_scale) * b.tensor_scale;
  for (std::int64_t m = 0; m < a.rows; ++m)
    for (std::int64_t n = 0; n < b.rows; ++n) {
      double sum = 0, abs_sum = 0;
      for (std::int64_t k = 0; k < K; ++k) {
        const double p = block_scaled(a, m, k) * block_scaled(b, n, k);
        sum += p;
        abs_sum += std::fabs(p);
      }
      const double want = alpha * sum;
      const double tol = (gamma + 3 * u) * alpha * abs_sum + 1e-300;
      EXPECT_NEAR(out[m * b.rows + n], want, tol) << "out[" << m << "][" << n << "]";
    }
}

TEST(SpecGemm, HandWorkedExact) {
  // amax = 2688 = 448 * 6 in both operands makes t = 1; every value below is exactly
  // representable (scale 448 for the rows holding 2688, scale 1 for the rows with max 6).
  //   A row 0: [2688, 0, ...]          B row 0: [2688, 0, ...]
  //   A row 1: [6, -3, 0.5, 1, 0, ...]  B row 1: [1, 1, 6, 0, ...]
  //                                     B row 2: [6, 0, 0, -4, 0, ...]
  std::vector<float> a(2 * 16, 0.0f), b(3 * 16, 0.0f);
  a[0] = 2688.0f;
  a[16] = 6.0f;
  a[17] = -3.0f;
  a[18] = 0.5f;
  a[19] = 1.0f;
  b[0] = 2688.0f;
  b[16] = 1.0f;
  b[17] = 1.0f;
  b[18] = 6.0f;
  b[32] = 6.0f;
  b[35] = -4.0f;
  const QuantizedTensor qa = quantize(a, 2, 16, QuantizerKind::rtn), qb = quantize(b, 3, 16, QuantizerKind::rtn);
  ASSERT_EQ(qa.tensor_scale, 1.0f);
  ASSERT_EQ(qb.tensor_scale, 1.0f);
  ASSERT_EQ(quartet::dequantize(qa), a);
  ASSERT_EQ(quartet::dequantize(qb), b);
  const std::vector<float> out = quartet::gemm_quantized(qa, qb);
  const std::vector<float> expected = {
      2688.0f * 2688.0f, 2688.0f, 2688.0f * 6.0f,  // A row 0 . B rows
      6.0f * 2688.0f, 6.0f - 3.0f + 0.5f * 6.0f, 6.0f * 6.0f - 4.0f,
  };
  EXPECT_EQ(out, expected);
}

TEST(SpecGemm, NvFp4MatchesDoubleReference) {
  const std::int64_t M = 5, N = 7, K = 256;
  const auto a = quantize(gaussian(M, K, 1, 3.0f), M, K, QuantizerKind::rtn);
  const auto b = quantize(gaussian(N, K, 2, 0.01f), N, K, QuantizerKind::four_over_six);
  expect_gemm_matches_reference(a, b);
}

TEST(SpecGemm, PaddedReductionDimension) {
  const std::int64_t M = 3, N = 4, K = 40;  // padded to 48 with zeros
  const auto a = quantize(gaussian(M, K, 3, 1.0f), M, K, QuantizerKind::rtn);
  const auto b = quantize(gaussian(N, K, 4, 1.0f), N, K, QuantizerKind::sr);
  expect_gemm_matches_reference(a, b);
}

TEST(SpecGemm, Mxfp4MatchesDoubleReference) {
  const std::int64_t M = 4, N = 6, K = 128;
  const auto a = quantize(gaussian(M, K, 5, 2.0f), M, K, QuantizerKind::mxfp4_rtn);
  const auto b = quantize(gaussian(N, K, 6, 0.5f), N, K, QuantizerKind::mxfp4_rtn);
  EXPECT_FLOAT_EQ(a.tensor_scale * b.tensor_scale, 1.0f / 9.0f);
  expect_gemm_matches_reference(a, b);
}

TEST(SpecGemm, SameRotationCancelsInTheProduct) {
  // Both operands rotated by the same H D: their GEMM (in the rotated domain) equals the inner
  // products of the unrotated dequantized rows. Extra tolerance for the two FP32 unrotations:
  // each changes a row by at most (log2 128 + 2) u ||row|| (see hadamard_test.cpp), which moves
  // an inner product by at most 2 * 9 u ||a|| ||b||.
  const std::int64_t M = 3, N = 4, K = 256;
  const Rotation rot = Rotation::random(128, {77u, 0u, 0u});
  const auto a = quantize(gaussian(M, K, 7, 1.0f), M, K, QuantizerKind::rtn, rot);
  const auto b = quantize(gaussian(N, K, 8, 1.0f), N, K, QuantizerKind::rtn, rot);
  const std::vector<float> out = quartet::gemm_quantized(a, b);
  const std::vector<float> ua = quartet::dequantize_unrotated(a, rot), ub = quartet::dequantize_unrotated(b, rot);
  const double u = std::ldexp(1.0, -24);
  for (std::int64_t m = 0; m < M; ++m)
    for (std::int64_t n = 0; n < N; ++n) {
      double dot = 0, na = 0, nb = 0, abs_sum = 0;
      for (std::int64_t k = 0; k < K; ++k) {
        dot += double(ua[m * K + k]) * ub[n * K + k];
        na += double(ua[m * K + k]) * ua[m * K + k];
        nb += double(ub[n * K + k]) * ub[n * K + k];
        abs_sum += std::fabs(double(ua[m * K + k]) * ub[n * K + k]);
      }
      const double tol = 2 * 9 * u * 1.01 * std::sqrt(na * nb) + (K + 3) * u * 1.01 * (abs_sum + std::sqrt(na * nb));
      EXPECT_NEAR(out[m * N + n], dot, tol) << m << " " << n;
    }
}

TEST(SpecGemm, MismatchedOperandsAreRejected) {
  const auto nv = quantize(gaussian(2, 64, 9, 1.0f), 2, 64, QuantizerKind::rtn);
  const auto nv_short = quantize(gaussian(2, 32, 9, 1.0f), 2, 32, QuantizerKind::rtn);
  const auto mx = quantize(gaussian(2, 64, 9, 1.0f), 2, 64, QuantizerKind::mxfp4_rtn);
  const auto nv_rot = quantize(gaussian(2, 64, 9, 1.0f), 2, 64, QuantizerKind::rtn, Rotation::hadamard(32));
  EXPECT_THROW(quartet::gemm_quantized(nv, mx), quartet::Error);
  EXPECT_THROW(quartet::gemm_quantized(nv, nv_short), quartet::Error);
  EXPECT_THROW(quartet::gemm_quantized(nv, nv_rot), quartet::Error);
  EXPECT_NO_THROW(quartet::gemm_quantized(nv, nv));
}

}  // namespace

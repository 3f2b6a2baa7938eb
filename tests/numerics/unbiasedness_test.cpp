// Statistical tests of unbiasedness (fixed seeds; tolerances from the variance).
//
// 1. SR is unbiased per element: without rotation the block scales are deterministic and each
//    element's rounding is an independent Bernoulli draw with a variance known exactly from
//    the grid, so z_i = (mean_i - x_i) / sqrt(var_i / B) is standard normal per element and
//    T = mean_i z_i^2 has mean 1 and standard deviation sqrt(2 / n).
// 2. MS-EDEN (both forms) and SR are unbiased over fresh rotations: with draws d = 1..B (fresh
//    signs and fresh rounding bits each), the mean of the reconstructions converges to x like
//    1/B. RTN and 4/6 are biased: their error stops falling. Two statistics tell them apart:
//    the per-element t statistic (mean over elements of t_i^2, expected (B-1)/(B-3) when
//    unbiased), and the ratio B * err(B) / (mean single-draw error) (expected 1 when
//    unbiased). Rows are independent replicates (independent data and rounding decisions),
//    so each statistic's standard error is estimated from its spread over rows.
#include <gtest/gtest.h>

#include <cmath>

#include "quartet/numerics/quantizer.h"
#include "support/test_support.h"

namespace quartet {
namespace {

struct MeanAndError {
  double mean = 0;
  double stderr_ = 0;
};

MeanAndError mean_over(const std::vector<double>& v) {
  MeanAndError m;
  for (double e : v) m.mean += e;
  m.mean /= static_cast<double>(v.size());
  double var = 0;
  for (double e : v) var += (e - m.mean) * (e - m.mean);
  m.stderr_ = std::sqrt(var / static_cast<double>(v.size() - 1) / static_cast<double>(v.size()));
  return m;
}

TEST(Unbiasedness, SrIsUnbiasedPerElement) {
  const std::int64_t rows = 16, cols = 128;
  const int draws = 1000;
  const std::vector<float> x = testing::gaussian_matrix(rows, cols, 21);
  const QuantizerSpec spec = QuantizerSpec::defaults(QuantizerKind::sr);
  std::vector<double> sum(x.size(), 0.0);
  QuantizedTensor first;
  for (int d = 0; d < draws; ++d) {
    const QuantizedTensor q = quantize(ConstMatrixView(x.data(), rows, cols), spec, Rotation::none(),
                                       RandomContext{5, 6, static_cast<std::uint32_t>(d)});
    if (d == 0) first = q;
    ASSERT_EQ(q.scales, first.scales) << "SR block scales are deterministic";
    const std::vector<float> xhat = dequantize(q);
    for (std::size_t i = 0; i < x.size(); ++i) sum[i] += xhat[i];
  }
  // Exact Bernoulli variance of each element: (hi - v)(v - lo) in code units, times (s t)^2.
  const std::vector<double> grid(testing::kE2M1Grid.begin(), testing::kE2M1Grid.end());
  double t_stat = 0;
  int n = 0;
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t c = 0; c < cols; ++c) {
      const double st = static_cast<double>(first.scale_value(r, c / 16)) * first.tensor_scale;
      const double v = std::fabs(x[static_cast<std::size_t>(r * cols + c)]) / st;
      const int lo = testing::floor_grid_index(v, grid);
      if (lo == 7) continue;
      const double p = (v - grid[lo]) / (grid[lo + 1] - grid[lo]);
      const double var = p * (1 - p) * std::pow((grid[lo + 1] - grid[lo]) * st, 2);
      if (draws * p * (1 - p) < 10) continue;  // too skewed for the normal approximation
      const double mean = sum[static_cast<std::size_t>(r * cols + c)] / draws;
      const double z = (mean - x[static_cast<std::size_t>(r * cols + c)]) / std::sqrt(var / draws);
      t_stat += z * z;
      ++n;
    }
  }
  ASSERT_GT(n, 1500);
  t_stat /= n;
  const double sd = std::sqrt(2.0 / n);
  EXPECT_NEAR(t_stat, 1.0, 5 * sd) << "mean z^2 over " << n << " elements";
}

struct DrawStatistics {
  MeanAndError t_squared;    // per-element t statistic, averaged per row
  MeanAndError error_ratio;  // B * err(B) / mean single-draw error, per row
  double expected_t_squared = 0;
};

// B draws of `kind` with fresh RHT-128 signs and rounding bits each.
DrawStatistics draw_statistics(QuantizerKind kind, int draws, std::int64_t rows) {
  const std::int64_t cols = 128;
  const std::vector<float> x = testing::gaussian_matrix(rows, cols, 31);
  const QuantizerSpec spec = QuantizerSpec::defaults(kind);
  std::vector<double> sum(x.size(), 0.0), sum_sq(x.size(), 0.0);
  for (int d = 0; d < draws; ++d) {
    const Rotation rotation = Rotation::random(128, RandomContext{8, 100, static_cast<std::uint32_t>(d)});
    const std::vector<float> xhat = dequantize_unrotated(
        quantize(ConstMatrixView(x.data(), rows, cols), spec, rotation, RandomContext{8, 200, static_cast<std::uint32_t>(d)}),
        rotation);
    for (std::size_t i = 0; i < x.size(); ++i) {
      const double e = static_cast<double>(xhat[i]) - x[i];
      sum[i] += e;
      sum_sq[i] += e * e;
    }
  }
  std::vector<double> t_rows, ratio_rows;
  for (std::int64_t r = 0; r < rows; ++r) {
    double t2 = 0, mean_err = 0, single_err = 0;
    for (std::int64_t c = 0; c < cols; ++c) {
      const auto i = static_cast<std::size_t>(r * cols + c);
      const double m = sum[i] / draws;
      const double var = (sum_sq[i] - draws * m * m) / (draws - 1);
      t2 += m * m / (var / draws);
      mean_err += m * m;
      single_err += sum_sq[i] / draws;
    }
    t_rows.push_back(t2 / cols);
    ratio_rows.push_back(draws * mean_err / single_err);
  }
  return {mean_over(t_rows), mean_over(ratio_rows), (draws - 1.0) / (draws - 3.0)};
}

class FreshRotations : public ::testing::TestWithParam<QuantizerKind> {};

TEST_P(FreshRotations, MeanOfDrawsConvergesLikeOneOverB) {
  const DrawStatistics s = draw_statistics(GetParam(), 512, 64);
  EXPECT_NEAR(s.t_squared.mean, s.expected_t_squared, 5 * s.t_squared.stderr_) << "per-element t^2";
  EXPECT_NEAR(s.error_ratio.mean, 1.0, 5 * s.error_ratio.stderr_) << "B err(B) / err(1)";
  EXPECT_LT(s.t_squared.stderr_, 0.05);  // the test has the power to see a bias like RTN's below
}

INSTANTIATE_TEST_SUITE_P(Unbiased, FreshRotations,
                         ::testing::Values(QuantizerKind::sr, QuantizerKind::ms_eden_g16, QuantizerKind::ms_eden_g128),
                         [](const auto& param_info) { return std::string(quantizer_name(param_info.param)); });

// The same statistics must reject round-to-nearest: it is biased even over fresh rotations.
TEST(Unbiasedness, TheTestDetectsTheBiasOfRoundToNearest) {
  for (QuantizerKind kind : {QuantizerKind::rtn, QuantizerKind::four_over_six}) {
    const DrawStatistics s = draw_statistics(kind, 512, 64);
    EXPECT_GT(s.t_squared.mean, s.expected_t_squared + 5 * s.t_squared.stderr_) << quantizer_name(kind);
    EXPECT_GT(s.error_ratio.mean, 1.0 + 5 * s.error_ratio.stderr_) << quantizer_name(kind);
  }
}

}  // namespace
}  // namespace quartet

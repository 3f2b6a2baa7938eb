// The numerics.md §8 protocol at a test-sized row count. Tolerances: the issue's ±2% band
// around the published figures (which were measured with another implementation) plus four
// standard errors of our estimate at this row count (the spread of per-row errors / sqrt(rows)).
#include "quartet/numerics/quant_error.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "quartet/error.h"

namespace quartet {
namespace {

constexpr std::int64_t kRows = 1 << 14;

const std::map<QuantizerKind, QuantErrorResult>& gaussian_results() {
  static const auto results = [] {
    QuantErrorConfig config;
    config.rows = kRows;
    std::map<QuantizerKind, QuantErrorResult> by_kind;
    for (const auto& r : run_quant_error(config)) by_kind[r.quantizer] = r;
    return by_kind;
  }();
  return results;
}

TEST(QuantError, ReproducesThePublishedFigures) {
  const struct { QuantizerKind kind; double rel_mse, misalignment; } published[] = {
      {QuantizerKind::rtn, 9.05e-3, 4.5e-3},
      {QuantizerKind::four_over_six, 7.56e-3, 3.3e-3},
      {QuantizerKind::sr, 2.352e-2, 0.0},
      {QuantizerKind::ms_eden_g128, 9.76e-3, 5.6e-4},
  };
  for (const auto& p : published) {
    const QuantErrorResult& r = gaussian_results().at(p.kind);
    EXPECT_NEAR(r.rel_mse, p.rel_mse, 0.02 * p.rel_mse + 4 * r.rel_mse_stderr) << quantizer_name(p.kind);
    EXPECT_NEAR(r.eff_bits, -std::log2(p.rel_mse) / 2, 0.01) << quantizer_name(p.kind);
    EXPECT_EQ(r.rotation_size, 128);
  }
  // Misalignment: the biased quantizers' figures to ~10%, the unbiased ones near zero.
  EXPECT_NEAR(gaussian_results().at(QuantizerKind::rtn).misalignment, 4.5e-3, 0.5e-3);
  EXPECT_NEAR(gaussian_results().at(QuantizerKind::four_over_six).misalignment, 3.3e-3, 0.4e-3);
  EXPECT_NEAR(gaussian_results().at(QuantizerKind::ms_eden_g128).misalignment, 5.6e-4, 1.5e-4);
  EXPECT_LT(std::fabs(gaussian_results().at(QuantizerKind::sr).misalignment), 3e-4);
}

TEST(QuantError, MsEdenHalvesTheErrorOfStochasticRounding) {
  const QuantErrorResult& eden = gaussian_results().at(QuantizerKind::ms_eden_g16);
  const QuantErrorResult& sr = gaussian_results().at(QuantizerKind::sr);
  EXPECT_LE(eden.rel_mse, 1.0e-2);
  EXPECT_GE(sr.rel_mse / eden.rel_mse, 2.3);
  EXPECT_LT(std::fabs(eden.misalignment), 3e-4);  // unbiased: no systematic shrinkage
}

TEST(QuantError, EveryQuantizerReportsItsOwnRotation) {
  EXPECT_EQ(gaussian_results().size(), kAllQuantizers.size());
  EXPECT_EQ(gaussian_results().at(QuantizerKind::mxfp4_quest).rotation_size, 32);
  EXPECT_EQ(gaussian_results().at(QuantizerKind::mxfp4_rtn).rotation_size, 32);
  EXPECT_EQ(gaussian_results().at(QuantizerKind::square16).rotation_size, 128);
  for (const auto& [kind, r] : gaussian_results()) {
    EXPECT_GT(r.rel_mse, 1e-3) << quantizer_name(kind);
    EXPECT_LT(r.rel_mse, 5e-2) << quantizer_name(kind);
  }
}

// Averaging 16 draws with fresh rotations shrinks an unbiased quantizer's error 16-fold
// (ratio 1/16 = 0.0625); the acceptance bound is 0.08.
TEST(QuantError, MeanOfSixteenDrawsOfUnbiasedQuantizers) {
  QuantErrorConfig config;
  config.rows = 1 << 11;
  config.draws = 16;
  config.quantizers = {QuantizerKind::sr, QuantizerKind::ms_eden_g16, QuantizerKind::ms_eden_g128};
  int calls = 0;
  const auto results = run_quant_error(config, [&](int done, int total) {
    ++calls;
    EXPECT_EQ(done, calls);
    EXPECT_EQ(total, 48);
  });
  EXPECT_EQ(calls, 48);
  for (const auto& r : results) {
    EXPECT_LE(r.rel_mse_mean_of_draws / r.rel_mse, 0.08) << quantizer_name(r.quantizer);
    EXPECT_GE(r.rel_mse_mean_of_draws / r.rel_mse, 0.05) << quantizer_name(r.quantizer);
  }
}

TEST(QuantError, DeterministicFromTheSeed) {
  QuantErrorConfig config;
  config.rows = 256;
  config.quantizers = {QuantizerKind::sr, QuantizerKind::ms_eden_g16};
  const auto a = run_quant_error(config), b = run_quant_error(config);
  config.seed = 1;
  const auto c = run_quant_error(config);
  for (std::size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].rel_mse, b[i].rel_mse);
    EXPECT_NE(a[i].rel_mse, c[i].rel_mse);
  }
}

// The input generator's moments (row 0 of a one-row input has scale 1). 2^17 samples: the
// sample mean has standard error 1/sqrt(n) = 0.0028; the variance estimate's standard error
// is sqrt((kurtosis - 1) / n): 0.0039 (Gaussian), 0.0062 (Laplace, kurtosis 6).
TEST(QuantError, InputDistributionsHaveTheirMoments) {
  const std::int64_t n = 1 << 17;
  const auto moments = [&](Distribution d) {
    const std::vector<float> x = make_quant_error_input(1, n, d, 3);
    double m1 = 0, m2 = 0, m4 = 0;
    for (float v : x) {
      m1 += v;
      m2 += static_cast<double>(v) * v;
      m4 += std::pow(static_cast<double>(v), 4);
    }
    return std::array<double, 3>{m1 / n, m2 / n, m4 / n};
  };
  const auto g = moments(Distribution::gaussian);
  EXPECT_NEAR(g[0], 0.0, 5 * 0.0028);
  EXPECT_NEAR(g[1], 1.0, 5 * 0.0039);
  EXPECT_NEAR(g[2] / (g[1] * g[1]), 3.0, 0.1);
  const auto l = moments(Distribution::laplace);
  EXPECT_NEAR(l[0], 0.0, 5 * 0.0028);
  EXPECT_NEAR(l[1], 1.0, 5 * 0.0062);
  EXPECT_NEAR(l[2] / (l[1] * l[1]), 6.0, 0.6);
  const auto t = moments(Distribution::student_t3);  // variance 3, infinite kurtosis
  EXPECT_NEAR(t[0], 0.0, 0.05);
  EXPECT_GT(t[2] / (t[1] * t[1]), 10.0);
  // Rows are scaled log-uniformly: the last of 1025 rows is 256x the first, exactly.
  const std::vector<float> x = make_quant_error_input(1025, 128, Distribution::gaussian, 3);
  const std::vector<float> y = make_quant_error_input(1, 128, Distribution::gaussian, 3);
  for (int c = 0; c < 128; ++c) EXPECT_FLOAT_EQ(x[c], y[c]);  // row 0 has scale 1 in both
}

TEST(QuantError, RejectsBadConfigurations) {
  const auto rejects = [](auto mutate) {
    QuantErrorConfig config;
    mutate(config);
    EXPECT_THROW(config.validate(), Error);
    EXPECT_THROW(run_quant_error(config), Error);
  };
  rejects([](QuantErrorConfig& c) { c.rows = 0; });
  rejects([](QuantErrorConfig& c) { c.cols = 100; });
  rejects([](QuantErrorConfig& c) { c.draws = 0; });
  rejects([](QuantErrorConfig& c) { c.quantizers.clear(); });
  EXPECT_THROW(parse_distribution("cauchy"), Error);
  EXPECT_EQ(parse_distribution("student-t3"), Distribution::student_t3);
}

}  // namespace
}  // namespace quartet

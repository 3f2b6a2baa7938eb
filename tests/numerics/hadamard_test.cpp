#include "quartet/numerics/hadamard.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>

#include "quartet/error.h"
#include "support/test_support.h"

namespace quartet {
namespace {

// H_n[i][j] = (-1)^popcount(i & j) / sqrt(n), the canonical Sylvester order.
double sylvester(int n, int i, int j) {
  return (std::popcount(static_cast<unsigned>(i & j)) % 2 ? -1.0 : 1.0) / std::sqrt(static_cast<double>(n));
}

class HadamardSizes : public ::testing::TestWithParam<int> {};

TEST_P(HadamardSizes, RotationIsSylvesterTimesSignsAppliedFirst) {
  const int n = GetParam();
  const int blocks = 3, rows = 4, cols = n * blocks;
  const std::vector<float> x = testing::gaussian_matrix(rows, cols, 100 + n);
  const Rotation rot = Rotation::random(n, RandomContext{5, 6, 7});
  std::vector<float> y = x;
  rotate_rows(y.data(), rows, cols, cols, rot);
  for (int r = 0; r < rows; ++r) {
    for (int b = 0; b < blocks; ++b) {
      for (int i = 0; i < n; ++i) {
        double expected = 0;  // (H D x)_i
        for (int j = 0; j < n; ++j) expected += sylvester(n, i, j) * rot.signs[j] * x[r * cols + b * n + j];
        ASSERT_NEAR(y[r * cols + b * n + i], expected, 1e-6 * (1 + std::fabs(expected))) << "row " << r << " i " << i;
      }
    }
  }
  // Signs applied after mixing (D H x) would give a different result.
  double diff = 0;
  for (int i = 0; i < n; ++i) {
    double after = 0;
    for (int j = 0; j < n; ++j) after += sylvester(n, i, j) * x[j];
    diff += std::fabs(after * rot.signs[i] - y[i]);
  }
  EXPECT_GT(diff, 1e-3);
}

TEST_P(HadamardSizes, UnrotateInvertsAndInnerProductsArePreserved) {
  const int n = GetParam();
  const int rows = 2, cols = 2 * n;
  const std::vector<float> x = testing::gaussian_matrix(rows, cols, 7);
  const Rotation rot = Rotation::random(n, RandomContext{1, 2, 3});
  std::vector<float> y = x;
  rotate_rows(y.data(), rows, cols, cols, rot);
  double dot_x = 0, dot_y = 0;
  for (int c = 0; c < cols; ++c) {
    dot_x += static_cast<double>(x[c]) * x[cols + c];
    dot_y += static_cast<double>(y[c]) * y[cols + c];
  }
  EXPECT_NEAR(dot_x, dot_y, 1e-5 * cols);
  unrotate_rows(y.data(), rows, cols, cols, rot);
  for (int i = 0; i < rows * cols; ++i) EXPECT_NEAR(y[i], x[i], 1e-5) << i;
}

INSTANTIATE_TEST_SUITE_P(Sizes, HadamardSizes, ::testing::Values(16, 32, 128));

TEST(Hadamard, FwhtIsTheUnnormalisedSylvesterProduct) {
  for (int n : {2, 4, 16, 128}) {
    for (int k = 0; k < n; ++k) {  // the transform of a unit vector is column k
      std::vector<double> v(static_cast<std::size_t>(n), 0.0);
      v[static_cast<std::size_t>(k)] = 1.0;
      fwht(v.data(), n);
      for (int i = 0; i < n; ++i) ASSERT_EQ(v[static_cast<std::size_t>(i)], sylvester(n, i, k) * std::sqrt(n));
    }
  }
}

TEST(Hadamard, FixedHadamardHasPositiveSignsAndNoneChangesNothing) {
  const Rotation h = Rotation::hadamard(32);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(h.signs[j], 1.0f);
  std::vector<float> x = testing::gaussian_matrix(1, 48, 3);
  const std::vector<float> before = x;
  rotate_rows(x.data(), 1, 48, 48, Rotation::none());
  EXPECT_EQ(x, before);
}

TEST(Hadamard, FreshSignsPerCallAndDeterministicPerContext) {
  EXPECT_EQ(Rotation::random(128, {1, 2, 3}), Rotation::random(128, {1, 2, 3}));
  EXPECT_NE(Rotation::random(128, {1, 2, 3}).signs, Rotation::random(128, {1, 2, 4}).signs);
}

TEST(Hadamard, RejectsBadSizesAndShapes) {
  std::vector<float> x(100, 1.0f);
  EXPECT_THROW(rotate_rows(x.data(), 1, 100, 100, Rotation::hadamard(16)), Error);  // 100 % 16 != 0
  EXPECT_THROW(Rotation::hadamard(64), Error);
  EXPECT_THROW(Rotation::hadamard(0), Error);
  try {
    rotate_rows(x.data(), 1, 100, 100, Rotation::hadamard(32));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("multiple of 32"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace quartet

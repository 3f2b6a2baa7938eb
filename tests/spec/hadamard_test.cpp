// Independent tests of the randomized Hadamard transform (numerics.md §4) against explicit
// Sylvester matrices built here in double: H[i][j] = (-1)^popcount(i & j) / sqrt(n).
//
// Tolerance. The spec lets the transform be computed in FP32 (the CPU may compute in double
// and round once). An FP32 fast Walsh-Hadamard transform of an n-block has log2(n) butterfly
// stages and one normalisation; each stage is orthogonal up to a factor sqrt(2) and adds at
// most u = 2^-24 relative error per element, so the 2-norm of the error of the normalised
// result is at most (log2(n) + 2) u ||x_block||_2 (first order), which bounds every element's
// error. Double-then-round-once is within 0.5 ulp, far inside it. A wrong order, sign
// placement or normalisation changes elements by O(||x|| / sqrt(n)), i.e. ~10^5 times more.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "quartet/error.h"
#include "quartet/numerics/hadamard.h"

namespace {

double sylvester(int n, int i, int j) {
  return (std::popcount(static_cast<unsigned>(i & j)) % 2 ? -1.0 : 1.0) / std::sqrt(static_cast<double>(n));
}

std::vector<float> gaussian(std::size_t count, std::uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(count);
  for (auto& x : v) x = d(gen);
  return v;
}

int log2i(int n) { return std::countr_zero(static_cast<unsigned>(n)); }

double block_norm(const float* x, int n) {
  double s = 0;
  for (int i = 0; i < n; ++i) s += static_cast<double>(x[i]) * x[i];
  return std::sqrt(s);
}

double tolerance(int n, double norm) { return (log2i(n) + 2) * std::ldexp(1.0, -24) * norm * 1.01 + 1e-30; }

quartet::Rotation with_signs(int n, std::uint32_t seed) {
  quartet::Rotation r;
  r.size = n;
  std::mt19937 gen(seed);
  for (int j = 0; j < quartet::kMaxRotationSize; ++j) r.signs[j] = 1.0f;
  for (int j = 0; j < n; ++j) r.signs[j] = (gen() & 1u) ? -1.0f : 1.0f;
  return r;
}

// y = H D x for one block, in double.
std::vector<double> ref_forward(const float* x, int n, const quartet::Rotation& r) {
  std::vector<double> y(n, 0.0);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) y[i] += sylvester(n, i, j) * r.signs[j] * static_cast<double>(x[j]);
  return y;
}

// x = D H y for one block, in double.
std::vector<double> ref_inverse(const float* y, int n, const quartet::Rotation& r) {
  std::vector<double> x(n, 0.0);
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < n; ++j) x[i] += sylvester(n, i, j) * static_cast<double>(y[j]);
    x[i] *= r.signs[i];
  }
  return x;
}

TEST(SpecHadamard, SupportedSizes) {
  for (int n : {16, 32, 128}) EXPECT_TRUE(quartet::is_supported_rotation_size(n)) << n;
  for (int n : {12, 48, 100, 256, 512, -16}) EXPECT_FALSE(quartet::is_supported_rotation_size(n)) << n;
}

TEST(SpecHadamard, FwhtIsTheUnnormalisedSylvesterTransform) {
  for (int n : {16, 32, 128}) {
    std::vector<double> v(n), expected(n, 0.0);
    for (int j = 0; j < n; ++j) v[j] = (j * 37 % 11) - 5;  // small integers: everything exact
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < n; ++j) expected[i] += sylvester(n, i, j) * std::sqrt(double(n)) * v[j];
    quartet::fwht(v.data(), n);
    for (int i = 0; i < n; ++i) EXPECT_NEAR(v[i], expected[i], 1e-9) << "n " << n << " i " << i;
  }
}

TEST(SpecHadamard, FixedHadamardEqualsExplicitSylvesterMatrix) {
  for (int n : {16, 32, 128}) {
    const quartet::Rotation rot = quartet::Rotation::hadamard(n);
    ASSERT_EQ(rot.size, n);
    ASSERT_TRUE(rot.enabled());
    for (int j = 0; j < n; ++j) ASSERT_EQ(rot.signs[j], 1.0f);
    const std::int64_t rows = 3, cols = 2 * n, ld = cols + 5;  // padding after each row
    std::vector<float> data = gaussian(static_cast<std::size_t>(rows * ld), 100 + n);
    const std::vector<float> x = data;
    quartet::rotate_rows(data.data(), rows, cols, ld, rot);
    for (std::int64_t r = 0; r < rows; ++r) {
      for (std::int64_t b = 0; b < cols / n; ++b) {
        const float* xb = &x[r * ld + b * n];
        const auto y = ref_forward(xb, n, rot);
        const double tol = tolerance(n, block_norm(xb, n));
        for (int i = 0; i < n; ++i)
          EXPECT_NEAR(data[r * ld + b * n + i], y[i], tol) << "n " << n << " row " << r << " block " << b << " i " << i;
      }
      for (std::int64_t c = cols; c < ld; ++c) EXPECT_EQ(data[r * ld + c], x[r * ld + c]) << "padding touched";
    }
  }
}

TEST(SpecHadamard, SignsAreAppliedBeforeMixing) {
  for (int n : {16, 32, 128}) {
    const quartet::Rotation rot = with_signs(n, 7u + n);
    // Unit vectors: H D e_k = eps_k H[:, k], whereas mixing first would give D H e_k.
    for (int k : {0, 1, n / 2 + 3, n - 1}) {
      std::vector<float> e(n, 0.0f);
      e[k] = 1.0f;
      quartet::rotate_rows(e.data(), 1, n, n, rot);
      bool distinguishes = false;
      for (int i = 0; i < n; ++i) {
        const double before = rot.signs[k] * sylvester(n, i, k);
        const double after = rot.signs[i] * sylvester(n, i, k);
        distinguishes |= before != after;
        EXPECT_NEAR(e[i], before, tolerance(n, 1.0)) << "n " << n << " k " << k << " i " << i;
      }
      EXPECT_TRUE(distinguishes || k == 0) << "test vector does not separate the two orders";
    }
    // A random matrix, two blocks per row.
    const std::int64_t rows = 2, cols = 2 * n;
    std::vector<float> data = gaussian(static_cast<std::size_t>(rows * cols), 300 + n);
    const std::vector<float> x = data;
    quartet::rotate_rows(data.data(), rows, cols, cols, rot);
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t b = 0; b < cols / n; ++b) {
        const float* xb = &x[r * cols + b * n];
        const auto y = ref_forward(xb, n, rot);
        for (int i = 0; i < n; ++i) EXPECT_NEAR(data[r * cols + b * n + i], y[i], tolerance(n, block_norm(xb, n)));
      }
  }
}

TEST(SpecHadamard, UnrotateIsTheExplicitInverse) {
  for (int n : {16, 32, 128}) {
    const quartet::Rotation rot = with_signs(n, 11u + n);
    const std::int64_t rows = 2, cols = 3 * n;
    std::vector<float> y = gaussian(static_cast<std::size_t>(rows * cols), 500 + n);
    const std::vector<float> y0 = y;
    quartet::unrotate_rows(y.data(), rows, cols, cols, rot);
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t b = 0; b < cols / n; ++b) {
        const float* yb = &y0[r * cols + b * n];
        const auto x = ref_inverse(yb, n, rot);
        for (int i = 0; i < n; ++i) EXPECT_NEAR(y[r * cols + b * n + i], x[i], tolerance(n, block_norm(yb, n)));
      }
    // Round trip: two transforms, so twice the single-transform bound.
    std::vector<float> z = y0;
    quartet::rotate_rows(z.data(), rows, cols, cols, rot);
    quartet::unrotate_rows(z.data(), rows, cols, cols, rot);
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t b = 0; b < cols / n; ++b) {
        const double tol = 2 * tolerance(n, block_norm(&y0[r * cols + b * n], n));
        for (int i = 0; i < n; ++i) EXPECT_NEAR(z[r * cols + b * n + i], y0[r * cols + b * n + i], tol);
      }
  }
}

TEST(SpecHadamard, SameRotationPreservesInnerProducts) {
  // <H D a, H D b> = <a, b>: each rotated element carries at most (log2 n + 2) u ||.|| error,
  // so by Cauchy-Schwarz the inner product of a row (several n-blocks) moves by at most
  // 2 (log2 n + 2) u ||a|| ||b|| plus the FP32-vs-double summation of the check (done in
  // double here, exact enough).
  for (int n : {16, 32, 128}) {
    const quartet::Rotation rot = with_signs(n, 13u + n);
    const std::int64_t cols = 4 * n;
    std::vector<float> a = gaussian(cols, 900 + n), b = gaussian(cols, 901 + n);
    double ab = 0, na = 0, nb = 0;
    for (std::int64_t i = 0; i < cols; ++i) {
      ab += double(a[i]) * b[i];
      na += double(a[i]) * a[i];
      nb += double(b[i]) * b[i];
    }
    quartet::rotate_rows(a.data(), 1, cols, cols, rot);
    quartet::rotate_rows(b.data(), 1, cols, cols, rot);
    double rab = 0;
    for (std::int64_t i = 0; i < cols; ++i) rab += double(a[i]) * b[i];
    const double tol = 2.02 * (log2i(n) + 2) * std::ldexp(1.0, -24) * std::sqrt(na * nb);
    EXPECT_NEAR(rab, ab, tol) << n;
  }
}

TEST(SpecHadamard, DisabledRotationLeavesDataUnchanged) {
  std::vector<float> x = gaussian(40, 3);
  const std::vector<float> x0 = x;
  const quartet::Rotation none = quartet::Rotation::none();
  EXPECT_FALSE(none.enabled());
  quartet::rotate_rows(x.data(), 2, 20, 20, none);
  EXPECT_EQ(x, x0);
  quartet::unrotate_rows(x.data(), 2, 20, 20, none);
  EXPECT_EQ(x, x0);
}

TEST(SpecHadamard, ColumnsNotAMultipleOfTheSizeAreRejected) {
  for (int n : {16, 32, 128}) {
    const quartet::Rotation rot = quartet::Rotation::hadamard(n);
    for (std::int64_t cols : {std::int64_t{n} + 1, std::int64_t{n} / 2, 3 * std::int64_t{n} - 8}) {
      std::vector<float> x(static_cast<std::size_t>(2 * cols), 1.0f);
      EXPECT_THROW(quartet::rotate_rows(x.data(), 2, cols, cols, rot), quartet::Error) << n << " " << cols;
      EXPECT_THROW(quartet::unrotate_rows(x.data(), 2, cols, cols, rot), quartet::Error) << n << " " << cols;
    }
  }
}

}  // namespace

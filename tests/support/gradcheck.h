// Finite-difference gradient checks in double precision.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

namespace quartet::testing {

// Central differences of f at x: (f(x + h e_i) - f(x - h e_i)) / 2h. The truncation error is
// O(h^2 f''') and the rounding error O(eps f / h): h = 1e-5 balances them at ~1e-10 for the
// smooth, O(1) functions tested here.
inline std::vector<double> numeric_gradient(const std::function<double(const std::vector<double>&)>& f,
                                            std::vector<double> x, double h = 1e-5) {
  std::vector<double> g(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double saved = x[i];
    x[i] = saved + h;
    const double up = f(x);
    x[i] = saved - h;
    const double down = f(x);
    x[i] = saved;
    g[i] = (up - down) / (2 * h);
  }
  return g;
}

// Analytic and numeric gradients agree to 1e-6 relative to the gradient's scale.
inline void expect_gradients_match(const std::vector<double>& analytic, const std::vector<double>& numeric,
                                   const std::string& what, double rtol = 1e-6) {
  ASSERT_EQ(analytic.size(), numeric.size()) << what;
  double scale = 1e-12;
  for (double v : numeric) scale = std::max(scale, std::fabs(v));
  int bad = 0;
  for (std::size_t i = 0; i < analytic.size(); ++i) {
    if (std::fabs(analytic[i] - numeric[i]) > rtol * scale && ++bad <= 5) {
      ADD_FAILURE() << what << "[" << i << "]: analytic " << analytic[i] << " numeric " << numeric[i];
    }
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << analytic.size() << " entries differ";
}

inline std::vector<double> random_values(std::size_t n, std::uint64_t seed, double scale = 1.0) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> normal(0.0, scale);
  std::vector<double> v(n);
  for (double& x : v) x = normal(gen);
  return v;
}

inline double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

inline double norm(const std::vector<double>& v) { return std::sqrt(dot(v, v)); }

inline std::vector<double> minus(const std::vector<double>& a, const std::vector<double>& b) {
  std::vector<double> d(a.size());
  for (std::size_t i = 0; i < a.size(); ++i) d[i] = a[i] - b[i];
  return d;
}

// C[m][n] = sum_k A[m][k] B[n][k] in double, A given [M, K] or (a_t) [K, M], likewise B: the GEMM
// convention of Backend::gemm, computed independently of it.
inline std::vector<double> matmul_tn(const std::vector<double>& a, bool a_t, const std::vector<double>& b, bool b_t,
                                     std::int64_t m, std::int64_t n, std::int64_t k) {
  std::vector<double> c(static_cast<std::size_t>(m * n), 0.0);
  for (std::int64_t i = 0; i < m; ++i) {
    for (std::int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (std::int64_t l = 0; l < k; ++l) {
        s += a[static_cast<std::size_t>(a_t ? l * m + i : i * k + l)] * b[static_cast<std::size_t>(b_t ? l * n + j : j * k + l)];
      }
      c[static_cast<std::size_t>(i * n + j)] = s;
    }
  }
  return c;
}

// A test parameter (a recipe name such as "quartet1-sr") as a GoogleTest name: letters and
// digits, everything else '_'.
inline std::string parameter_name(std::string text) {
  for (char& ch : text) {
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  }
  return text;
}

}  // namespace quartet::testing

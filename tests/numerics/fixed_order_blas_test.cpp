// fixed_order_gemm: the same bits for any OpenMP thread count (OpenBLAS's own threading gives
// different bits for 1 and 2 threads on these shapes), and the product it should be.
#include "numerics/fixed_order_blas.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

namespace quartet {
namespace {

struct Shape {
  std::int64_t m, n, k;
  bool a_transposed, b_transposed;
};

template <class Real>
std::vector<Real> product(const Shape& s, const std::vector<Real>& a, const std::vector<Real>& b, int threads) {
  const int saved = omp_get_max_threads();
  omp_set_num_threads(threads);
  std::vector<Real> c(static_cast<std::size_t>(s.m * s.n), Real(0.5));
  fixed_order_gemm(s.a_transposed, s.b_transposed, s.m, s.n, s.k, Real(1.5), a.data(), s.a_transposed ? s.m : s.k,
                   b.data(), s.b_transposed ? s.k : s.n, Real(1), c.data(), s.n);
  omp_set_num_threads(saved);
  return c;
}

template <class Real>
void check_shapes() {
  std::mt19937 gen(7);
  std::normal_distribution<Real> normal;
  for (const Shape& s : {Shape{512, 384, 128, false, true}, Shape{512, 128, 512, false, false},
                         Shape{200, 257, 130, true, true}, Shape{384, 128, 512, true, false}, Shape{1, 512, 4096, false, true}}) {
    std::vector<Real> a(static_cast<std::size_t>(s.m * s.k)), b(static_cast<std::size_t>(s.k * s.n));
    for (Real& x : a) x = normal(gen);
    for (Real& x : b) x = normal(gen);
    const std::vector<Real> one = product(s, a, b, 1);
    for (int threads : {2, 3, 4}) {
      const std::vector<Real> many = product(s, a, b, threads);
      EXPECT_EQ(std::memcmp(one.data(), many.data(), one.size() * sizeof(Real)), 0)
          << s.m << " x " << s.n << " x " << s.k << " with " << threads << " threads";
    }
    // And it is the product: C = 1.5 op(A) op(B) + 0.5, against a plain double loop.
    for (std::int64_t i = 0; i < s.m; i += 37) {
      for (std::int64_t j = 0; j < s.n; j += 29) {
        double sum = 0;
        for (std::int64_t p = 0; p < s.k; ++p) {
          const double av = s.a_transposed ? a[static_cast<std::size_t>(p * s.m + i)] : a[static_cast<std::size_t>(i * s.k + p)];
          const double bv = s.b_transposed ? b[static_cast<std::size_t>(j * s.k + p)] : b[static_cast<std::size_t>(p * s.n + j)];
          sum += av * bv;
        }
        EXPECT_NEAR(one[static_cast<std::size_t>(i * s.n + j)], 1.5 * sum + 0.5, 1e-3 * (1 + std::abs(sum)));
      }
    }
  }
}

TEST(FixedOrderGemm, SameBitsForAnyThreadCountFloat) { check_shapes<float>(); }
TEST(FixedOrderGemm, SameBitsForAnyThreadCountDouble) { check_shapes<double>(); }

}  // namespace
}  // namespace quartet

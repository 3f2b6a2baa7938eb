#include "numerics/fixed_order_blas.h"

#include <cblas.h>
#include <fmt/format.h>
#include <omp.h>

#include <algorithm>
#include <limits>

#include "quartet/error.h"

namespace quartet {

namespace {

// OpenMP OpenBLAS runs single-threaded inside an active parallel region and, outside one, with
// omp_get_max_threads() threads; setting the calling task's thread count to 1 makes every call
// single-threaded in both cases (a serial loop over the blocks included).
class SingleThreadedBlas {
 public:
  SingleThreadedBlas() : saved_(omp_get_max_threads()) { omp_set_num_threads(1); }
  ~SingleThreadedBlas() { omp_set_num_threads(saved_); }
  SingleThreadedBlas(const SingleThreadedBlas&) = delete;
  SingleThreadedBlas& operator=(const SingleThreadedBlas&) = delete;

 private:
  int saved_;
};

int blas_int(std::int64_t v, const char* what) {
  if (v < 0 || v > std::numeric_limits<int>::max()) {
    throw Error(fmt::format("gemm: {} = {} is outside the CBLAS index range [0, {}]", what, v,
                            std::numeric_limits<int>::max()));
  }
  return static_cast<int>(v);
}

void blas_call(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k, float alpha, const float* a, int lda,
               const float* b, int ldb, float beta, float* c, int ldc) {
  cblas_sgemm(CblasRowMajor, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void blas_call(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k, double alpha, const double* a, int lda,
               const double* b, int ldb, double beta, double* c, int ldc) {
  cblas_dgemm(CblasRowMajor, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

template <class Real>
void gemm_in_row_blocks(bool a_transposed, bool b_transposed, std::int64_t m, std::int64_t n, std::int64_t k,
                        Real alpha, const Real* a, std::int64_t lda, const Real* b, std::int64_t ldb, Real beta, Real* c,
                        std::int64_t ldc) {
  const int in = blas_int(n, "n"), ik = blas_int(k, "k");
  const int ilda = blas_int(lda, "lda"), ildb = blas_int(ldb, "ldb"), ildc = blas_int(ldc, "ldc");
  blas_int(m, "m");
  const CBLAS_TRANSPOSE ta = a_transposed ? CblasTrans : CblasNoTrans, tb = b_transposed ? CblasTrans : CblasNoTrans;
  const std::int64_t blocks = (m + kBlasRowsPerBlock - 1) / kBlasRowsPerBlock;
  // Whether to use threads changes only the speed: the blocks are the same either way.
  const bool parallel = blocks > 1 && static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k) >= 1 << 20;
#pragma omp parallel for schedule(static) if (parallel)
  for (std::int64_t block = 0; block < blocks; ++block) {
    const std::int64_t row = block * kBlasRowsPerBlock;
    const int rows = static_cast<int>(std::min(kBlasRowsPerBlock, m - row));
    // Row `row` of op(A): a row of A, or a column of A when it is transposed.
    const Real* a_rows = a_transposed ? a + row : a + row * lda;
    const SingleThreadedBlas single;
    blas_call(ta, tb, rows, in, ik, alpha, a_rows, ilda, b, ildb, beta, c + row * ldc, ildc);
  }
}

}  // namespace

void fixed_order_gemm(bool a_transposed, bool b_transposed, std::int64_t m, std::int64_t n, std::int64_t k,
                      float alpha, const float* a, std::int64_t lda, const float* b, std::int64_t ldb, float beta,
                      float* c, std::int64_t ldc) {
  gemm_in_row_blocks(a_transposed, b_transposed, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void fixed_order_gemm(bool a_transposed, bool b_transposed, std::int64_t m, std::int64_t n, std::int64_t k,
                      double alpha, const double* a, std::int64_t lda, const double* b, std::int64_t ldb, double beta,
                      double* c, std::int64_t ldc) {
  gemm_in_row_blocks(a_transposed, b_transposed, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

}  // namespace quartet

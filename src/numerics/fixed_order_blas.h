// Matrix products through CBLAS whose bits do not depend on the thread count.
//
// OpenBLAS divides a product among its threads differently for each thread count, and the
// results differ in the last bits (measured with the OpenMP OpenBLAS 0.3.21 here: a 512 x 128
// x 128 sgemm gives different bits with 1 and 2 threads), so a training run's losses depended on
// OMP_NUM_THREADS. Here the output is cut into blocks of a fixed number of rows, whatever the
// thread count; each block is one single-threaded BLAS call, and the blocks are spread over the
// OpenMP threads. Every output element is then computed by the same call on the same data for
// any thread count. (OpenBLAS built with pthreads ignores OpenMP: pin it with
// OPENBLAS_NUM_THREADS=1; the build prefers the OpenMP one.)
#pragma once

#include <cstdint>

namespace quartet {

// Rows of the output computed by one BLAS call.
inline constexpr std::int64_t kBlasRowsPerBlock = 64;

// Row-major C[m, n] = alpha op(A) op(B) + beta C, as cblas_?gemm(CblasRowMajor, ...):
// op(A) is [m, k] (A is [k, m] when a_transposed), op(B) is [k, n] (B is [n, k] when
// b_transposed).
void fixed_order_gemm(bool a_transposed, bool b_transposed, std::int64_t m, std::int64_t n, std::int64_t k,
                      float alpha, const float* a, std::int64_t lda, const float* b, std::int64_t ldb, float beta,
                      float* c, std::int64_t ldc);
void fixed_order_gemm(bool a_transposed, bool b_transposed, std::int64_t m, std::int64_t n, std::int64_t k,
                      double alpha, const double* a, std::int64_t lda, const double* b, std::int64_t ldb, double beta,
                      double* c, std::int64_t ldc);

}  // namespace quartet

// Error checks for CUDA runtime and cuBLASLt calls: a failure becomes a quartet::Error naming
// the call, the file and the line.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime_api.h>

namespace quartet::cuda {

[[noreturn]] void throw_cuda_error(cudaError_t error, const char* expression, const char* file, int line);
[[noreturn]] void throw_cublas_error(cublasStatus_t status, const char* expression, const char* file, int line);

}  // namespace quartet::cuda

#define QUARTET_CUDA_CHECK(expr)                                                         \
  do {                                                                                   \
    const cudaError_t quartet_error_ = (expr);                                           \
    if (quartet_error_ != cudaSuccess) {                                                 \
      ::quartet::cuda::throw_cuda_error(quartet_error_, #expr, __FILE__, __LINE__);       \
    }                                                                                    \
  } while (0)

#define QUARTET_CUBLAS_CHECK(expr)                                                       \
  do {                                                                                   \
    const cublasStatus_t quartet_status_ = (expr);                                       \
    if (quartet_status_ != CUBLAS_STATUS_SUCCESS) {                                      \
      ::quartet::cuda::throw_cublas_error(quartet_status_, #expr, __FILE__, __LINE__);    \
    }                                                                                    \
  } while (0)

// After a kernel launch: launch errors now, execution errors at the next synchronisation.
#define QUARTET_CUDA_LAUNCHED() QUARTET_CUDA_CHECK(cudaGetLastError())

#include "backend/cuda/cuda_check.h"

#include <fmt/format.h>

#include "quartet/error.h"

namespace quartet::cuda {

void throw_cuda_error(cudaError_t error, const char* expression, const char* file, int line) {
  throw Error(fmt::format("CUDA error {} ({}) in {} at {}:{}", cudaGetErrorName(error), cudaGetErrorString(error),
                          expression, file, line));
}

void throw_cublas_error(cublasStatus_t status, const char* expression, const char* file, int line) {
  throw Error(fmt::format("cuBLAS error {} in {} at {}:{}", static_cast<int>(status), expression, file, line));
}

}  // namespace quartet::cuda

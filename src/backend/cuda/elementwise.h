// Element-wise device operations of the CUDA backend (dtype-generic over f32, bf16, i32).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "quartet/backend/backend.h"

namespace quartet::cuda {

void fill(void* p, DType dtype, std::int64_t n, float value, cudaStream_t stream);
void convert(const void* src, DType src_dtype, void* dst, DType dst_dtype, std::int64_t n, cudaStream_t stream);
void add_inplace(void* a, DType a_dtype, const void* b, DType b_dtype, std::int64_t n, cudaStream_t stream);

struct SumAndFinite {
  double sum = 0;               // sum of squares, deterministic
  std::uint64_t non_finite = 0; // how many NaN/Inf
};
SumAndFinite sum_of_squares(const void* a, DType dtype, std::int64_t n, cudaStream_t stream);

// *out = *a * *b on the device (alpha = t_A t_B of a quantized GEMM).
void product(const float* a, const float* b, float* out, cudaStream_t stream);

}  // namespace quartet::cuda

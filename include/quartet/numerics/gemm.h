// Reference quantized GEMM (numerics.md §7):
//   out[m][n] = alpha * sum_k A[m][k] * B[n][k],  alpha = t_A * t_B,
// "TN": both operands are K-contiguous (A is M x K, B is N x K). The block-scaled values
// e2m1 * scale are exact in FP32, the products of two of them are exact too, and the sum is
// accumulated in FP32 by BLAS: a native NVFP4 GEMM up to summation order. The tensor scales
// are never folded into the operands; they enter as alpha.
#pragma once

#include <vector>

#include "quartet/numerics/quantized_tensor.h"

namespace quartet {

// out must hold A.rows * B.rows floats (row-major M x N). Throws Error if the operands do
// not share format, reduction length or rotation.
void gemm_quantized(const QuantizedTensor& a, const QuantizedTensor& b, float* out);
std::vector<float> gemm_quantized(const QuantizedTensor& a, const QuantizedTensor& b);

}  // namespace quartet

// The quantized GEMM with its first operand read in NVFP4 (Hopper, sm_90a): out[m][n] (+)=
// alpha sum_k A[m][k] B[n][k], where A is E2M1 codes and E4M3 group scales (16 along k), turned
// into BF16 in registers inside the main loop (code x scale is exact in BF16), and B is BF16.
// It sums the same exact products in FP32 as the emulated GEMM (both operands' BF16 copies
// through cuBLASLt), in another order, so it needs no BF16 copy of A (docs/cuda.md, "A GEMM that
// reads FP4").
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "quartet/backend/tensor.h"

namespace quartet::cuda {

// Whether gemm_fp4_operand takes this shape on this device: an sm_90 GPU, k a multiple of 64,
// m and n positive and within the kernel's index range.
bool gemm_fp4_operand_fits(std::int64_t m, std::int64_t n, std::int64_t k);

// a_codes: uint8 [m][k/2], element 2j in the low nibble; a_scales: E4M3 [m][k/16]; b: BF16
// [n][k]; out: [m][n] of out_dtype (f32 or bf16); alpha: a device pointer to one float; with
// `accumulate` out += the product, else out = it. Throws Error where it does not fit.
void gemm_fp4_operand(void* out, DType out_dtype, const void* a_codes, const void* a_scales, const void* b,
                      std::int64_t m, std::int64_t n, std::int64_t k, const float* alpha, bool accumulate,
                      cudaStream_t stream);

}  // namespace quartet::cuda

// Device loads and stores of real tensors in FP32 or BF16 (BF16 rounds to nearest even).
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

namespace quartet::cuda {

__device__ __forceinline__ float load_real(const void* p, bool bf16, std::int64_t i) {
  return bf16 ? __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]) : static_cast<const float*>(p)[i];
}

__device__ __forceinline__ void store_real(void* p, bool bf16, std::int64_t i, float v) {
  if (bf16) {
    static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v);
  } else {
    static_cast<float*>(p)[i] = v;
  }
}

}  // namespace quartet::cuda

// Device loads and stores of real tensors in FP32 or BF16 (BF16 rounds to nearest even): one
// element, or eight at a time with 16-byte accesses.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "backend/cuda/device_memory.h"

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

// Eight consecutive elements as FP32 and back, the address 16-byte aligned: one 16-byte access
// for BF16 (element 2k in the low half of word k), two for FP32. Stores round to nearest even.
__device__ __forceinline__ void load8(const void* base, bool bf16, std::int64_t i, float (&v)[8]) {
  if (bf16) {
    const uint4 raw = *reinterpret_cast<const uint4*>(static_cast<const __nv_bfloat16*>(base) + i);
    const unsigned words[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      v[2 * k] = __uint_as_float(words[k] << 16);
      v[2 * k + 1] = __uint_as_float(words[k] & 0xFFFF0000u);
    }
  } else {
    const float4* p = reinterpret_cast<const float4*>(static_cast<const float*>(base) + i);
    const float4 a = p[0], b = p[1];
    v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
  }
}

__device__ __forceinline__ unsigned pack_bf16x2(float low, float high) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(low, high);
  return *reinterpret_cast<const unsigned*>(&h);
}

__device__ __forceinline__ void store8(void* base, bool bf16, std::int64_t i, const float (&v)[8]) {
  if (bf16) {
    const uint4 raw{pack_bf16x2(v[0], v[1]), pack_bf16x2(v[2], v[3]), pack_bf16x2(v[4], v[5]), pack_bf16x2(v[6], v[7])};
    *reinterpret_cast<uint4*>(static_cast<__nv_bfloat16*>(base) + i) = raw;
  } else {
    float4* p = reinterpret_cast<float4*>(static_cast<float*>(base) + i);
    p[0] = make_float4(v[0], v[1], v[2], v[3]);
    p[1] = make_float4(v[4], v[5], v[6], v[7]);
  }
}

}  // namespace quartet::cuda

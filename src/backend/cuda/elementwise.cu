// Element-wise kernels of the CUDA backend: conversions, fill, add, and a sum of squares that is
// deterministic (fixed block partition, fixed-order final sum).
#include <cuda_bf16.h>

#include <cmath>
#include <vector>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/dependent_launch.cuh"
#include "backend/cuda/device_memory.h"
#include "backend/cuda/elementwise.h"

namespace quartet::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kReduceBlocks = 256;

unsigned blocks_for(std::int64_t n) {
  const std::int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(b < 65535 ? (b > 0 ? b : 1) : 65535);
}

// Element types by code (code() below); values pass through FP32, which every f32, bf16, u8
// value and every i32 or f64 value the backend fills with (0, 1, NaN, small integers) is.
__device__ float load(const void* p, int dtype, std::int64_t i) {
  switch (dtype) {
    case 0: return static_cast<const float*>(p)[i];
    case 1: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    case 3: return static_cast<float>(static_cast<const double*>(p)[i]);
    case 4: return static_cast<float>(static_cast<const std::uint8_t*>(p)[i]);
    default: return static_cast<float>(static_cast<const std::int32_t*>(p)[i]);
  }
}

__device__ void store(void* p, int dtype, std::int64_t i, float v) {
  switch (dtype) {
    case 0: static_cast<float*>(p)[i] = v; break;
    case 1: static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v); break;
    case 3: static_cast<double*>(p)[i] = v; break;
    case 4: static_cast<std::uint8_t*>(p)[i] = static_cast<std::uint8_t>(v); break;
    default: static_cast<std::int32_t*>(p)[i] = static_cast<std::int32_t>(v); break;
  }
}

int code(DType d) {
  switch (d) {
    case DType::f32: return 0;
    case DType::bf16: return 1;
    case DType::i32: return 2;
    case DType::f64: return 3;
    case DType::u8: return 4;
  }
  return 2;
}

#define QUARTET_GRID_STRIDE(i, n)                                                                  \
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < (n); \
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)

__global__ void fill_kernel(void* p, int dtype, std::int64_t n, float v) {
  wait_for_upstream_grids();
  QUARTET_GRID_STRIDE(i, n) store(p, dtype, i, v);
}

__global__ void convert_kernel(const void* src, int src_dtype, void* dst, int dst_dtype, std::int64_t n) {
  wait_for_upstream_grids();
  QUARTET_GRID_STRIDE(i, n) store(dst, dst_dtype, i, load(src, src_dtype, i));
}

__global__ void add_kernel(void* a, int a_dtype, const void* b, int b_dtype, std::int64_t n) {
  wait_for_upstream_grids();
  QUARTET_GRID_STRIDE(i, n) store(a, a_dtype, i, load(a, a_dtype, i) + load(b, b_dtype, i));
}

// Per-block partial sums of squares (in double) and non-finite counts, fixed partition.
__global__ void partials_kernel(const void* a, int dtype, std::int64_t n, double* sums, unsigned* bad) {
  wait_for_upstream_grids();
  __shared__ double s[kThreads];
  __shared__ unsigned nb[kThreads];
  double acc = 0;
  unsigned count = 0;
  QUARTET_GRID_STRIDE(i, n) {
    const float v = load(a, dtype, i);
    acc += static_cast<double>(v) * static_cast<double>(v);
    count += isfinite(v) ? 0u : 1u;
  }
  s[threadIdx.x] = acc;
  nb[threadIdx.x] = count;
  __syncthreads();
  for (int off = kThreads / 2; off > 0; off /= 2) {
    if (threadIdx.x < off) {
      s[threadIdx.x] += s[threadIdx.x + off];
      nb[threadIdx.x] += nb[threadIdx.x + off];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    sums[blockIdx.x] = s[0];
    bad[blockIdx.x] = nb[0];
  }
}

__global__ void product_kernel(const float* a, const float* b, float* out) { wait_for_upstream_grids(); *out = *a * *b; }

}  // namespace

void fill(void* p, DType dtype, std::int64_t n, float value, cudaStream_t stream) {
  launch_dependent(fill_kernel, blocks_for(n), kThreads, 0, stream, p, code(dtype), n, value);
  QUARTET_CUDA_LAUNCHED();
}

void convert(const void* src, DType src_dtype, void* dst, DType dst_dtype, std::int64_t n, cudaStream_t stream) {
  launch_dependent(convert_kernel, blocks_for(n), kThreads, 0, stream, src, code(src_dtype), dst, code(dst_dtype), n);
  QUARTET_CUDA_LAUNCHED();
}

void add_inplace(void* a, DType a_dtype, const void* b, DType b_dtype, std::int64_t n, cudaStream_t stream) {
  launch_dependent(add_kernel, blocks_for(n), kThreads, 0, stream, a, code(a_dtype), b, code(b_dtype), n);
  QUARTET_CUDA_LAUNCHED();
}

SumAndFinite sum_of_squares(const void* a, DType dtype, std::int64_t n, cudaStream_t stream) {
  auto sums = device_alloc(kReduceBlocks * sizeof(double));
  auto bad = device_alloc(kReduceBlocks * sizeof(unsigned));
  launch_dependent(partials_kernel, kReduceBlocks, kThreads, 0, stream, a, code(dtype), n, ptr<double>(sums), ptr<unsigned>(bad));
  QUARTET_CUDA_LAUNCHED();
  std::vector<double> s(kReduceBlocks);
  std::vector<unsigned> b(kReduceBlocks);
  QUARTET_CUDA_CHECK(cudaMemcpyAsync(s.data(), sums.get(), s.size() * sizeof(double), cudaMemcpyDeviceToHost, stream));
  QUARTET_CUDA_CHECK(cudaMemcpyAsync(b.data(), bad.get(), b.size() * sizeof(unsigned), cudaMemcpyDeviceToHost, stream));
  QUARTET_CUDA_CHECK(cudaStreamSynchronize(stream));
  SumAndFinite r;
  for (int i = 0; i < kReduceBlocks; ++i) {  // fixed order: the same result every time
    r.sum += s[static_cast<std::size_t>(i)];
    r.non_finite += b[static_cast<std::size_t>(i)];
  }
  return r;
}

void product(const float* a, const float* b, float* out, cudaStream_t stream) {
  launch_dependent(product_kernel, 1, 1, 0, stream, a, b, out);
  QUARTET_CUDA_LAUNCHED();
}

}  // namespace quartet::cuda

// Element-wise kernels of the CUDA backend: conversions, fill, add, scale, reductions that are
// deterministic (fixed block partition, fixed-order final sum), AdamW.
#include <cuda_bf16.h>

#include <cmath>
#include <vector>

#include "backend/cuda/cuda_check.h"
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

__device__ float load(const void* p, int dtype, std::int64_t i) {
  switch (dtype) {
    case 0: return static_cast<const float*>(p)[i];
    case 1: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    default: return static_cast<float>(static_cast<const std::int32_t*>(p)[i]);
  }
}

__device__ void store(void* p, int dtype, std::int64_t i, float v) {
  switch (dtype) {
    case 0: static_cast<float*>(p)[i] = v; break;
    case 1: static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v); break;
    default: static_cast<std::int32_t*>(p)[i] = static_cast<std::int32_t>(v); break;
  }
}

int code(DType d) { return d == DType::f32 ? 0 : (d == DType::bf16 ? 1 : 2); }

#define QUARTET_GRID_STRIDE(i, n)                                                                  \
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < (n); \
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)

__global__ void fill_kernel(void* p, int dtype, std::int64_t n, float v) {
  QUARTET_GRID_STRIDE(i, n) store(p, dtype, i, v);
}

__global__ void convert_kernel(const void* src, int src_dtype, void* dst, int dst_dtype, std::int64_t n) {
  QUARTET_GRID_STRIDE(i, n) store(dst, dst_dtype, i, load(src, src_dtype, i));
}

__global__ void add_kernel(void* a, int a_dtype, const void* b, int b_dtype, std::int64_t n) {
  QUARTET_GRID_STRIDE(i, n) store(a, a_dtype, i, load(a, a_dtype, i) + load(b, b_dtype, i));
}

__global__ void scale_kernel(void* a, int dtype, std::int64_t n, float f) {
  QUARTET_GRID_STRIDE(i, n) store(a, dtype, i, load(a, dtype, i) * f);
}

// Per-block partial sums of squares (in double) and non-finite counts, fixed partition.
__global__ void partials_kernel(const void* a, int dtype, std::int64_t n, double* sums, unsigned* bad) {
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

__global__ void product_kernel(const float* a, const float* b, float* out) { *out = *a * *b; }

__global__ void adamw_kernel(float* p, const float* g, float* m, float* v, std::int64_t n, float lr, float b1, float b2,
                             float c1, float c2, float eps, float wd) {
  QUARTET_GRID_STRIDE(i, n) {
    m[i] = b1 * m[i] + (1.0f - b1) * g[i];
    v[i] = b2 * v[i] + (1.0f - b2) * g[i] * g[i];
    const float m_hat = m[i] / c1, v_hat = v[i] / c2;
    p[i] -= lr * (m_hat / (sqrtf(v_hat) + eps) + wd * p[i]);
  }
}

}  // namespace

void fill(void* p, DType dtype, std::int64_t n, float value, cudaStream_t stream) {
  fill_kernel<<<blocks_for(n), kThreads, 0, stream>>>(p, code(dtype), n, value);
  QUARTET_CUDA_LAUNCHED();
}

void convert(const void* src, DType src_dtype, void* dst, DType dst_dtype, std::int64_t n, cudaStream_t stream) {
  convert_kernel<<<blocks_for(n), kThreads, 0, stream>>>(src, code(src_dtype), dst, code(dst_dtype), n);
  QUARTET_CUDA_LAUNCHED();
}

void add_inplace(void* a, DType a_dtype, const void* b, DType b_dtype, std::int64_t n, cudaStream_t stream) {
  add_kernel<<<blocks_for(n), kThreads, 0, stream>>>(a, code(a_dtype), b, code(b_dtype), n);
  QUARTET_CUDA_LAUNCHED();
}

void scale(void* a, DType dtype, std::int64_t n, float factor, cudaStream_t stream) {
  scale_kernel<<<blocks_for(n), kThreads, 0, stream>>>(a, code(dtype), n, factor);
  QUARTET_CUDA_LAUNCHED();
}

SumAndFinite sum_of_squares(const void* a, DType dtype, std::int64_t n, cudaStream_t stream) {
  auto sums = device_alloc(kReduceBlocks * sizeof(double));
  auto bad = device_alloc(kReduceBlocks * sizeof(unsigned));
  partials_kernel<<<kReduceBlocks, kThreads, 0, stream>>>(a, code(dtype), n, ptr<double>(sums), ptr<unsigned>(bad));
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
  product_kernel<<<1, 1, 0, stream>>>(a, b, out);
  QUARTET_CUDA_LAUNCHED();
}

void adamw(float* param, const float* grad, float* m, float* v, std::int64_t n, const AdamWParams& p,
           cudaStream_t stream) {
  const float c1 = static_cast<float>(1.0 - std::pow(p.beta1, static_cast<double>(p.step)));
  const float c2 = static_cast<float>(1.0 - std::pow(p.beta2, static_cast<double>(p.step)));
  adamw_kernel<<<blocks_for(n), kThreads, 0, stream>>>(param, grad, m, v, n, static_cast<float>(p.lr),
                                                       static_cast<float>(p.beta1), static_cast<float>(p.beta2), c1, c2,
                                                       static_cast<float>(p.eps), static_cast<float>(p.weight_decay));
  QUARTET_CUDA_LAUNCHED();
}

}  // namespace quartet::cuda

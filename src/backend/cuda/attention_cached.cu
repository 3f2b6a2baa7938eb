// Attention of a few new positions against a key/value cache on the GPU (sampling: one new
// token costs one token's work). Decoding reads every cached key and value once per new token
// and is bound by memory, not arithmetic, so the kernels are plain ones: one pass rotates the
// new keys (RoPE at their positions) into the cache and copies the values; then one block per
// (new position, head, sequence) computes that query's attention, each of its warps taking
// every kWarps-th cached position with its own running maximum and sum (online softmax), the
// warps combined at the end.
//
// Numerics, like the fused forward kernels (attention.cu): the rotated q and k in BF16 (the
// cache holds BF16, Backend::kv_cache_dtype), the rotation in unfused FP32 in the CPU's order,
// scores, softmax and the weighted sum of values in FP32 (the fused kernels also round the
// probabilities to BF16; this one does not). The GPU tests compare it with the CPU's cached
// attention at a stated tolerance.
#include <cuda_bf16.h>

#include <cmath>
#include <vector>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device_memory.h"
#include "backend/cuda/device_real.cuh"
#include "backend/cuda/message.h"
#include "backend/cuda/ops.h"
#include "backend/cuda/rope_device_tables.h"
#include "quartet/backend/rope_tables.h"
#include "quartet/error.h"
#include "quartet/numerics/host_device.h"

namespace quartet::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kWarps = 4;                  // per attention block
constexpr std::int64_t kMaxHeadDim = 1024;  // q and kWarps partial outputs in shared memory

unsigned blocks_for(std::int64_t n) {
  const std::int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(b < (std::int64_t{1} << 31) - 1 ? (b > 0 ? b : 1) : (std::int64_t{1} << 31) - 1);
}

struct Dims {
  int batch, seq, heads, kv_heads, head_dim;
  std::int64_t width;     // qkv row: (heads + 2 kv_heads) * head_dim
  std::int64_t capacity;  // cache rows per sequence
  std::int64_t offset;    // position of the first new row
  bool qkv_bf16, out_bf16, cache_bf16;
  float scale;
};

// The rotate-half pair (a, b) at cos c, sin s: attention.cu's rope_kernel, unfused FP32.
__device__ __forceinline__ void rotate_pair(float a, float b, float c, float s, float& first, float& second) {
  first = fsub(fmul(a, c), fmul(b, s));
  second = fadd(fmul(b, c), fmul(a, s));
}

// One thread per (new row, kv head, pair i): the rotated key pair and the value pair into the
// cache rows of the new positions.
__global__ void append_kernel(const void* __restrict__ qkv, void* __restrict__ keys, void* __restrict__ values,
                              const float* __restrict__ cos_t, const float* __restrict__ sin_t, Dims d) {
  const int half = d.head_dim / 2;
  const std::int64_t kv_width = static_cast<std::int64_t>(d.kv_heads) * d.head_dim;
  const std::int64_t items = static_cast<std::int64_t>(d.batch) * d.seq * d.kv_heads * half;
  for (std::int64_t it = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; it < items;
       it += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const int i = static_cast<int>(it % half), h = static_cast<int>(it / half % d.kv_heads);
    const std::int64_t n = it / half / d.kv_heads;  // new row: b * seq + t
    const std::int64_t b = n / d.seq, t = n % d.seq, pos = d.offset + t;
    const std::int64_t in = n * d.width + static_cast<std::int64_t>(d.heads + h) * d.head_dim + i;
    const std::int64_t in_v = in + kv_width;
    const std::int64_t at = (b * d.capacity + pos) * kv_width + static_cast<std::int64_t>(h) * d.head_dim + i;
    const std::int64_t table = pos * half + i;
    float first, second;
    rotate_pair(load_real(qkv, d.qkv_bf16, in), load_real(qkv, d.qkv_bf16, in + half), cos_t[table], sin_t[table],
                first, second);
    store_real(keys, d.cache_bf16, at, first);
    store_real(keys, d.cache_bf16, at + half, second);
    store_real(values, d.cache_bf16, at, load_real(qkv, d.qkv_bf16, in_v));
    store_real(values, d.cache_bf16, at + half, load_real(qkv, d.qkv_bf16, in_v + half));
  }
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// Block (t, h, b): the output of query row t of head h of sequence b over cached positions
// 0 .. offset + t. Shared memory: q [D], then kWarps partial outputs [D] each.
__global__ void attention_kernel(const void* __restrict__ qkv, const void* __restrict__ keys,
                                 const void* __restrict__ values, void* __restrict__ out, const float* __restrict__ cos_t,
                                 const float* __restrict__ sin_t, Dims d) {
  extern __shared__ float shared[];
  __shared__ float warp_max[kWarps], warp_sum_of_exp[kWarps];
  const int t = blockIdx.x, h = blockIdx.y, b = blockIdx.z, D = d.head_dim, half = D / 2;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int kvh = h / (d.heads / d.kv_heads);
  const std::int64_t n = static_cast<std::int64_t>(b) * d.seq + t, pos = d.offset + t;
  const std::int64_t kv_width = static_cast<std::int64_t>(d.kv_heads) * d.head_dim;
  float* q = shared;
  float* acc = shared + D + warp * D;

  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    const std::int64_t in = n * d.width + static_cast<std::int64_t>(h) * D + i;
    float first, second;
    rotate_pair(load_real(qkv, d.qkv_bf16, in), load_real(qkv, d.qkv_bf16, in + half), cos_t[pos * half + i],
                sin_t[pos * half + i], first, second);
    // Scores from BF16 q as from BF16 keys, like the fused kernels.
    q[i] = d.cache_bf16 ? __bfloat162float(__float2bfloat16_rn(first)) : first;
    q[i + half] = d.cache_bf16 ? __bfloat162float(__float2bfloat16_rn(second)) : second;
  }
  for (int i = lane; i < D; i += 32) acc[i] = 0.0f;
  __syncthreads();

  float running_max = -INFINITY, running_sum = 0.0f;
  for (std::int64_t u = warp; u <= pos; u += kWarps) {
    const std::int64_t row = (static_cast<std::int64_t>(b) * d.capacity + u) * kv_width + static_cast<std::int64_t>(kvh) * D;
    float dot = 0.0f;
    for (int i = lane; i < D; i += 32) dot += q[i] * load_real(keys, d.cache_bf16, row + i);
    const float score = warp_sum(dot) * d.scale;
    const float new_max = fmaxf(running_max, score);
    const float rescale = expf(running_max - new_max), p = expf(score - new_max);
    running_sum = running_sum * rescale + p;
    for (int i = lane; i < D; i += 32) acc[i] = acc[i] * rescale + p * load_real(values, d.cache_bf16, row + i);
    running_max = new_max;
  }
  if (lane == 0) {
    warp_max[warp] = running_max;
    warp_sum_of_exp[warp] = running_sum;
  }
  __syncthreads();

  // Warp 0 always has position 0, so the maximum is finite; a warp without positions weighs 0.
  float top = warp_max[0];
  for (int w = 1; w < kWarps; ++w) top = fmaxf(top, warp_max[w]);
  float weight[kWarps], total = 0.0f;
  for (int w = 0; w < kWarps; ++w) {
    weight[w] = expf(warp_max[w] - top);
    total += warp_sum_of_exp[w] * weight[w];
  }
  const std::int64_t o = n * d.heads * D + static_cast<std::int64_t>(h) * D;
  for (int i = threadIdx.x; i < D; i += blockDim.x) {
    float y = 0.0f;
    for (int w = 0; w < kWarps; ++w) y += shared[D + w * D + i] * weight[w];
    store_real(out, d.out_bf16, o + i, y / total);
  }
}

bool real_dtype(DType t) { return t == DType::bf16 || t == DType::f32; }

}  // namespace

void attention_forward_cached(Tensor& out, Tensor& k_cache, Tensor& v_cache, const Tensor& qkv, const AttentionShape& s,
                              std::int64_t offset, cudaStream_t stream) {
  check_cached_attention(out, k_cache, v_cache, qkv, s, offset, DType::bf16);
  if (qkv.device() != Device::cuda) throw Error("cached attention: the tensors must be GPU tensors");
  if (!real_dtype(qkv.dtype()) || !real_dtype(out.dtype())) {
    throw Error(message("cached attention: qkv and the output must be bf16 or f32, got ", dtype_name(qkv.dtype()), " and ",
                        dtype_name(out.dtype())));
  }
  if (s.head_dim > kMaxHeadDim || s.batch > 65535 || s.heads > 65535 || s.seq > (std::int64_t{1} << 30)) {
    throw Error(message("cached attention: head dim ", s.head_dim, ", batch ", s.batch, ", heads ", s.heads,
                        " or new positions ", s.seq, " beyond the kernels' limits (", kMaxHeadDim, ", 65535, 65535, 2^30)"));
  }
  const Dims d{static_cast<int>(s.batch), static_cast<int>(s.seq),      static_cast<int>(s.heads),
               static_cast<int>(s.kv_heads), static_cast<int>(s.head_dim), s.qkv_width(),
               k_cache.dim(0) / s.batch, offset, qkv.dtype() == DType::bf16, out.dtype() == DType::bf16, true,
               1.0f / std::sqrt(static_cast<float>(s.head_dim))};
  // Tables for the whole cache: built once per model, not at every new position.
  const RopeTables& tables = device_rope_tables(d.capacity, s.head_dim, s.rope_theta);
  const std::int64_t pairs = s.tokens() * s.kv_heads * (s.head_dim / 2);
  append_kernel<<<blocks_for(pairs), kThreads, 0, stream>>>(qkv.raw(), k_cache.raw(), v_cache.raw(),
                                                            ptr<float>(tables.cos), ptr<float>(tables.sin), d);
  QUARTET_CUDA_LAUNCHED();
  const dim3 grid(static_cast<unsigned>(s.seq), static_cast<unsigned>(s.heads), static_cast<unsigned>(s.batch));
  const std::size_t shared = static_cast<std::size_t>((1 + kWarps) * s.head_dim) * sizeof(float);
  attention_kernel<<<grid, kWarps * 32, shared, stream>>>(qkv.raw(), k_cache.raw(), v_cache.raw(), out.raw(),
                                                          ptr<float>(tables.cos), ptr<float>(tables.sin), d);
  QUARTET_CUDA_LAUNCHED();
}

}  // namespace quartet::cuda

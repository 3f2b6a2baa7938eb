// Fused softmax cross-entropy on the GPU (ops.h), one block of 1024 threads per row, over the
// row's first `classes` columns (the rest are padding and get a zero gradient):
//  pass 1: each thread keeps a running (max, sum of exp(x - max)) in FP32 over its elements,
//          merged across the block in a fixed tree (a butterfly within warps, then over warps);
//          the row's loss is log(sum) + max - logit[target], in double;
//  pass 2: dlogits[j] = (softmax_j - [j == target]) * grad_scale, stored in dlogits' dtype.
// Each element is read by the thread that later writes its gradient, and every read of pass 1
// (the target's logit included) happens before the barrier that starts pass 2, so dlogits may
// be the logits themselves. Rows are read twice; the second read is served by L2 (at two blocks
// per SM, about 264 rows of a GPT-2 vocabulary are in flight: 26 MB).
//
// A row's elements: a scalar head up to the first 16-byte boundary, 16-byte vectors, a scalar
// tail (a vocabulary such as GPT-2's 50257 leaves rows unaligned). The per-row losses go to a
// scratch buffer that one block adds, in row order and in double, to loss_sum[0].
#include <cuda_bf16.h>

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <limits>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/dependent_launch.cuh"
#include "backend/cuda/device_errors.cuh"
#include "backend/cuda/device_errors.h"
#include "backend/cuda/device_memory.h"
#include "backend/cuda/message.h"
#include "backend/cuda/ops.h"
#include "quartet/error.h"

namespace quartet::cuda {

namespace {

constexpr int kWarp = 32;
constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / kWarp;
constexpr int kBatch = 2;  // 16-byte loads a thread issues before using them
constexpr float kLog2e = 1.44269504088896340736f;
// The running maximum's start: finite, so that x - max is never inf - inf (a -inf logit gives
// exp 0, not NaN), and low enough that any real logit replaces it.
constexpr float kLowest = -0.5f * FLT_MAX;
constexpr int kSumThreads = 256;

// ---- elements of T as FP32 ----

template <class T>
constexpr int kPerVector = 16 / static_cast<int>(sizeof(T));  // elements in 16 bytes

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <class T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// 16 bytes stay raw until used, so that a batch of loads in flight costs 4 registers each.
__device__ __forceinline__ uint4 load16(const void* p) { return *reinterpret_cast<const uint4*>(p); }

__device__ __forceinline__ void unpack(const uint4& raw, float (&v)[4]) {
  v[0] = __uint_as_float(raw.x), v[1] = __uint_as_float(raw.y), v[2] = __uint_as_float(raw.z), v[3] = __uint_as_float(raw.w);
}

__device__ __forceinline__ void unpack(const uint4& raw, float (&v)[8]) {
  const unsigned words[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
  for (int k = 0; k < 4; ++k) {  // BF16: element 2k in the low half of word k
    v[2 * k] = __uint_as_float(words[k] << 16);
    v[2 * k + 1] = __uint_as_float(words[k] & 0xFFFF0000u);
  }
}

__device__ __forceinline__ void store16(float* p, const float (&v)[4]) {
  *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
}

__device__ __forceinline__ unsigned pack_bf16x2(float low, float high) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(low, high);  // round to nearest even
  return *reinterpret_cast<const unsigned*>(&h);
}

__device__ __forceinline__ void store16(__nv_bfloat16* p, const float (&v)[8]) {
  *reinterpret_cast<uint4*>(p) =
      uint4{pack_bf16x2(v[0], v[1]), pack_bf16x2(v[2], v[3]), pack_bf16x2(v[4], v[5]), pack_bf16x2(v[6], v[7])};
}

// ---- the running softmax denominator ----

// sum = sum over the elements seen of exp(x - max) = exp2((x - max) log2 e).
struct Running {
  float max;
  float sum;

  static __device__ __forceinline__ Running empty() { return {kLowest, 0.0f}; }

  template <int N>
  __device__ __forceinline__ void add(const float (&x)[N]) {
    float chunk_max = x[0];
#pragma unroll
    for (int e = 1; e < N; ++e) chunk_max = fmaxf(chunk_max, x[e]);  // a NaN never becomes the max
    if (chunk_max > max) {
      sum = __fmul_rn(sum, exp2f(__fmul_rn(__fsub_rn(max, chunk_max), kLog2e)));
      max = chunk_max;
    }
#pragma unroll
    for (int e = 0; e < N; ++e) sum = __fadd_rn(sum, exp2f(__fmul_rn(__fsub_rn(x[e], max), kLog2e)));
  }
};

// Commutative bit for bit (max, products and the sum of two products all commute), so both
// lanes of a butterfly step get the same result.
__device__ __forceinline__ Running merge(const Running& a, const Running& b) {
  Running r;
  r.max = fmaxf(a.max, b.max);
  r.sum = __fadd_rn(__fmul_rn(a.sum, exp2f(__fmul_rn(__fsub_rn(a.max, r.max), kLog2e))),
                    __fmul_rn(b.sum, exp2f(__fmul_rn(__fsub_rn(b.max, r.max), kLog2e))));
  return r;
}

__device__ __forceinline__ Running warp_merge(Running r) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    Running other;
    other.max = __shfl_xor_sync(~0u, r.max, offset);
    other.sum = __shfl_xor_sync(~0u, r.sum, offset);
    r = merge(r, other);
  }
  return r;
}

// The block's merged (max, sum), the same in every thread. Called by every thread.
__device__ Running block_merge(Running r) {
  __shared__ Running warp_results[kWarps];
  __shared__ Running total;
  r = warp_merge(r);
  const int lane = static_cast<int>(threadIdx.x) % kWarp, warp = static_cast<int>(threadIdx.x) / kWarp;
  if (lane == 0) warp_results[warp] = r;
  __syncthreads();
  if (warp == 0) {
    r = warp_merge(lane < kWarps ? warp_results[lane] : Running::empty());
    if (lane == 0) total = r;
  }
  __syncthreads();
  return total;
}

// Where a row's 16-byte vectors are: elements [0, head) and [tail, vocab) are scalar.
// In-row indices are 32-bit: the vocabulary is below 2^31.
struct RowSplit {
  int head = 0;
  int vectors = 0;
  int tail = 0;
};

template <class T>
__device__ __forceinline__ RowSplit split_row(const T* row, int vocab, bool vectorised) {
  RowSplit s;
  if (!vectorised) return s;  // all scalar: the tail is the whole row
  const auto past_boundary = static_cast<int>(reinterpret_cast<std::uintptr_t>(row) % 16 / sizeof(T));
  s.head = past_boundary == 0 ? 0 : kPerVector<T> - past_boundary;
  if (s.head > vocab) s.head = vocab;
  s.vectors = (vocab - s.head) / kPerVector<T>;
  s.tail = s.head + s.vectors * kPerVector<T>;
  return s;
}

// ---- kernels ----

// A row of zeros (masked or invalid target).
template <class T>
__device__ void zero_row(T* out, const RowSplit& s, int vocab) {
  constexpr int P = kPerVector<T>;
  float zeros[P] = {};
  const int t = static_cast<int>(threadIdx.x);
  if (t < s.head) out[t] = from_float<T>(0.0f);
  for (int k = t; k < s.vectors; k += kThreads) store16(out + s.head + k * P, zeros);
  for (int j = s.tail + t; j < vocab; j += kThreads) out[j] = from_float<T>(0.0f);
}

template <class T>
__global__ void __launch_bounds__(kThreads)
    cross_entropy_rows_kernel(const T* logits, T* dlogits, const std::int32_t* __restrict__ targets,
                              double* __restrict__ row_loss, int vocab, int width, float scale, bool vectorised,
                              unsigned long long* error_slot) {
  wait_for_upstream_grids();
  constexpr int P = kPerVector<T>;
  const std::int64_t row = blockIdx.x;
  const int t = static_cast<int>(threadIdx.x);
  const T* in = logits + row * width;
  T* out = dlogits + row * width;
  for (int j = vocab + t; j < width; j += kThreads) out[j] = from_float<T>(0.0f);  // padding columns
  const RowSplit s = split_row(in, vocab, vectorised);
  const std::int32_t target = targets[row];
  if (target < 0 || target >= vocab) {  // the whole block takes this branch
    if (t == 0) {
      if (target != -1) record_data_error(error_slot, row, target);
      row_loss[row] = target == -1 ? 0.0 : static_cast<double>(NAN);
    }
    zero_row(out, s, vocab);
    return;
  }

  // Pass 1.
  Running running = Running::empty();
  float target_logit = 0.0f;
  if (t == 0) target_logit = to_float(in[target]);
  if (t < s.head) running.add<1>({to_float(in[t])});
  for (int k0 = t; k0 < s.vectors; k0 += kBatch * kThreads) {
    uint4 raw[kBatch];
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {
      const int k = k0 + b * kThreads;
      if (k < s.vectors) raw[b] = load16(in + s.head + k * P);
    }
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {
      if (k0 + b * kThreads >= s.vectors) continue;
      float v[P];
      unpack(raw[b], v);
      running.add(v);
    }
  }
  for (int j = s.tail + t; j < vocab; j += kThreads) running.add<1>({to_float(in[j])});
  const Running row_total = block_merge(running);  // its barriers end every read of pass 1
  const float log2_sum = log2f(row_total.sum);
  if (t == 0) {
    row_loss[row] = log(static_cast<double>(row_total.sum)) + static_cast<double>(row_total.max) -
                    static_cast<double>(target_logit);
  }

  // Pass 2.
  const auto gradient = [&](float x, int j) {
    const float p = exp2f(__fmaf_rn(__fsub_rn(x, row_total.max), kLog2e, -log2_sum));
    return __fmul_rn(j == target ? __fsub_rn(p, 1.0f) : p, scale);
  };
  if (t < s.head) out[t] = from_float<T>(gradient(to_float(in[t]), t));
  for (int k0 = t; k0 < s.vectors; k0 += kBatch * kThreads) {
    uint4 raw[kBatch];
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {
      const int k = k0 + b * kThreads;
      if (k < s.vectors) raw[b] = load16(in + s.head + k * P);
    }
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {
      const int k = k0 + b * kThreads;
      if (k >= s.vectors) continue;
      const int first = s.head + k * P;
      float v[P];
      unpack(raw[b], v);
#pragma unroll
      for (int e = 0; e < P; ++e) v[e] = gradient(v[e], first + e);
      store16(out + first, v);
    }
  }
  for (int j = s.tail + t; j < vocab; j += kThreads) out[j] = from_float<T>(gradient(to_float(in[j]), j));
}

// loss_sum[0] += the rows' losses, each thread summing every kSumThreads-th row in order, then a
// fixed tree over the threads: the same bits on every call.
__global__ void __launch_bounds__(kSumThreads)
    add_row_losses_kernel(const double* __restrict__ row_loss, std::int64_t rows, double* __restrict__ loss_sum) {
  wait_for_upstream_grids();
  __shared__ double partial[kSumThreads];
  double acc = 0.0;
  for (std::int64_t i = threadIdx.x; i < rows; i += kSumThreads) acc += row_loss[i];
  partial[threadIdx.x] = acc;
  __syncthreads();
  for (int half = kSumThreads / 2; half > 0; half /= 2) {
    if (static_cast<int>(threadIdx.x) < half) partial[threadIdx.x] += partial[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) loss_sum[0] += partial[0];
}

void expect_on_gpu(const Tensor& t, const char* what) {
  if (!t.defined() || t.device() != Device::cuda) {
    throw Error(message(what, ": expected a GPU tensor, got ", t.defined() ? "a CPU tensor" : "none"));
  }
}

}  // namespace

void cross_entropy(Tensor& dlogits, const Tensor& logits, const Tensor& targets, std::int64_t classes,
                   double grad_scale, Tensor& loss_sum, cudaStream_t stream) {
  expect_on_gpu(logits, "cross_entropy logits");
  if (logits.ndim() != 2 || (logits.dtype() != DType::f32 && logits.dtype() != DType::bf16)) {
    throw Error(message("cross_entropy: expected 2-D f32 or bf16 logits, got ", shape_string(logits.shape()), " ",
                        dtype_name(logits.dtype())));
  }
  const std::int64_t rows = logits.dim(0), width = logits.dim(1), vocab = classes;
  expect_on_gpu(dlogits, "cross_entropy dlogits");
  dlogits.expect("cross_entropy dlogits (the logits' shape and dtype)", logits.shape(), logits.dtype());
  expect_on_gpu(targets, "cross_entropy targets");
  targets.expect("cross_entropy targets", {rows}, DType::i32);
  expect_on_gpu(loss_sum, "cross_entropy loss sum");
  loss_sum.expect("cross_entropy loss sum", {1}, DType::f64);
  if (vocab < 1 || vocab > width || width > std::numeric_limits<std::int32_t>::max()) {
    throw Error(message("cross_entropy: ", vocab, " classes in rows of ", width, " columns (at most 2^31 - 1)"));
  }
  if (rows == 0) return;
  if (rows > std::numeric_limits<std::int32_t>::max()) {
    throw Error(message("cross_entropy: ", rows, " rows; at most 2^31 - 1 are supported"));
  }
  note_data_error_context(DataErrorKind::loss_target, vocab);
  // Rows of the two tensors start equally far from a 16-byte boundary: one split serves both.
  const bool vectorised =
      (reinterpret_cast<std::uintptr_t>(dlogits.raw()) - reinterpret_cast<std::uintptr_t>(logits.raw())) % 16 == 0;
  auto losses = device_alloc(static_cast<std::size_t>(rows) * sizeof(double));
  const auto* t = static_cast<const std::int32_t*>(targets.raw());
  const auto scale = static_cast<float>(grad_scale);
  unsigned long long* slot = data_error_slot(DataErrorKind::loss_target);
  if (logits.dtype() == DType::bf16) {
    launch_dependent(cross_entropy_rows_kernel<__nv_bfloat16>, static_cast<unsigned>(rows), kThreads, 0, stream,
        static_cast<const __nv_bfloat16*>(logits.raw()), static_cast<__nv_bfloat16*>(dlogits.raw()), t,
        ptr<double>(losses), static_cast<int>(vocab), static_cast<int>(width), scale, vectorised, slot);
  } else {
    launch_dependent(cross_entropy_rows_kernel<float>, static_cast<unsigned>(rows), kThreads, 0, stream,
        static_cast<const float*>(logits.raw()), static_cast<float*>(dlogits.raw()), t, ptr<double>(losses),
        static_cast<int>(vocab), static_cast<int>(width), scale, vectorised, slot);
  }
  QUARTET_CUDA_LAUNCHED();
  launch_dependent(add_row_losses_kernel, 1, kSumThreads, 0, stream, ptr<double>(losses), rows, static_cast<double*>(loss_sum.raw()));
  QUARTET_CUDA_LAUNCHED();
}

}  // namespace quartet::cuda

// RMSNorm on the GPU (ops.h): forward, the residual add fused with it, and backward.
//
// Rows of up to 8192 columns (a multiple of 8, 16-byte aligned) take the "team" kernels: a team
// of threads_per_row threads (a multiple of 32) owns a row, each thread up to four 8-element
// vectors of it, loaded once in 16-byte accesses and kept in registers between the reduction and
// the output; a block holds 256 / threads_per_row teams. Other rows take the looping kernels (a
// block per row, scalar accesses, the row read again from cache for the second pass).
//
// Every reduction has a fixed order, so the same inputs give the same bits: the sum of squares
// (and the backward's dot product) is a per-thread FP32 sum, a butterfly within each warp and
// the team's warps added in order. The weight gradient is reduced in two steps: a grid whose
// size depends only on the shape, each block summing its rows' terms per column in FP32 into a
// [blocks, cols] scratch buffer, then a column kernel adding the blocks' sums in block order.
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <type_traits>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/dependent_launch.cuh"
#include "backend/cuda/device_memory.h"
#include "backend/cuda/device_real.cuh"
#include "backend/cuda/message.h"
#include "backend/cuda/ops.h"
#include "quartet/error.h"
#include "quartet/numerics/host_device.h"

namespace quartet::cuda {

namespace {

constexpr int kWarp = 32;
constexpr int kVector = 8;                // elements per 16-byte BF16 access (two for FP32)
constexpr int kBlockThreads = 256;        // team kernels
constexpr int kMaxVectorsPerThread = 4;   // 32 FP32 values of a row per thread...
constexpr int kMaxTeamThreads = 256;      // ...so rows of up to 8192 columns stay in registers
constexpr int kLoopThreads = 256;         // looping kernels: a block per row
constexpr int kBackwardBlocks = 512;      // at most this many partial weight-gradient rows
constexpr int kColumnTile = 32;           // the column reduction: 32 columns x 32 lanes a block
constexpr int kColumnLanes = 32;


// The value a tensor of that dtype stores.
__device__ __forceinline__ float stored_value(float v, bool bf16) {
  return bf16 ? __bfloat162float(__float2bfloat16_rn(v)) : v;
}

// The sum of one value per thread over the row's team (blockDim.x threads, a multiple of 32): a
// butterfly within each warp (every lane ends with the same bits, since IEEE addition
// commutes), then the team's warp sums in warp order. Every thread of the block calls it.
__device__ float team_sum(float v, float* warp_sums) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(~0u, v, offset);
  const int warps = static_cast<int>(blockDim.x) / kWarp;
  if (warps == 1) return v;
  float* team = warp_sums + threadIdx.y * warps;
  if (threadIdx.x % kWarp == 0) team[threadIdx.x / kWarp] = v;
  __syncthreads();
  float total = team[0];
  for (int w = 1; w < warps; ++w) total += team[w];
  __syncthreads();  // the next call writes warp_sums again
  return total;
}

// 1 / sqrt(mean square + eps), the CPU's operations unfused.
__device__ __forceinline__ float inverse_rms(float sum_of_squares, std::int64_t cols, float eps) {
  return fdiv(1.0f, fsqrt(fadd(fdiv(sum_of_squares, static_cast<float>(cols)), eps)));
}

// ---- forward ----

// A team per row (blockDim = threads_per_row x rows per block). With kResidual the row is
// x + y, rounded to sum's dtype and stored there; `sum` may be x or y (each element is read
// before it is written, by the thread that writes it).
template <int V, bool kResidual>
__global__ void __launch_bounds__(kBlockThreads)
    rmsnorm_team_kernel(const void* x, bool x_bf16, const void* y, bool y_bf16, void* sum, bool sum_bf16,
                        const void* __restrict__ weight, bool weight_bf16, void* __restrict__ out, bool out_bf16,
                        float* __restrict__ rstd, std::int64_t rows, std::int64_t cols, float eps) {
  wait_for_upstream_grids();
  __shared__ float warp_sums[kBlockThreads / kWarp];
  const std::int64_t row = blockIdx.x * static_cast<std::int64_t>(blockDim.y) + threadIdx.y;
  const bool live = row < rows;  // a team past the end still takes part in the block's reductions
  const std::int64_t vectors = cols / kVector;
  float v[V][kVector];
  float squares = 0.0f;
#pragma unroll
  for (int k = 0; k < V; ++k) {
    const std::int64_t vec = threadIdx.x + k * static_cast<std::int64_t>(blockDim.x);
    if (!live || vec >= vectors) continue;
    const std::int64_t at = row * cols + vec * kVector;
    load8(x, x_bf16, at, v[k]);
    if constexpr (kResidual) {
      float b[kVector];
      load8(y, y_bf16, at, b);
#pragma unroll
      for (int e = 0; e < kVector; ++e) v[k][e] = stored_value(__fadd_rn(v[k][e], b[e]), sum_bf16);
      store8(sum, sum_bf16, at, v[k]);
    }
#pragma unroll
    for (int e = 0; e < kVector; ++e) squares = __fmaf_rn(v[k][e], v[k][e], squares);
  }
  const float s = inverse_rms(team_sum(squares, warp_sums), cols, eps);
  if (!live) return;
  if (threadIdx.x == 0) rstd[row] = s;
#pragma unroll
  for (int k = 0; k < V; ++k) {
    const std::int64_t vec = threadIdx.x + k * static_cast<std::int64_t>(blockDim.x);
    if (vec >= vectors) continue;
    float w[kVector], o[kVector];
    load8(weight, weight_bf16, vec * kVector, w);
#pragma unroll
    for (int e = 0; e < kVector; ++e) o[e] = fmul(fmul(v[k][e], s), w[e]);
    store8(out, out_bf16, row * cols + vec * kVector, o);
  }
}

// A block per row, any width and alignment: the row is read again (from cache) for the output;
// with kResidual that second read is of the stored sum.
template <bool kResidual>
__global__ void __launch_bounds__(kLoopThreads)
    rmsnorm_loop_kernel(const void* x, bool x_bf16, const void* y, bool y_bf16, void* sum, bool sum_bf16,
                        const void* __restrict__ weight, bool weight_bf16, void* __restrict__ out, bool out_bf16,
                        float* __restrict__ rstd, std::int64_t cols, float eps) {
  wait_for_upstream_grids();
  __shared__ float warp_sums[kLoopThreads / kWarp];
  const std::int64_t base = blockIdx.x * cols;
  float squares = 0.0f;
  for (std::int64_t j = threadIdx.x; j < cols; j += kLoopThreads) {
    float v = load_real(x, x_bf16, base + j);
    if constexpr (kResidual) {
      v = stored_value(__fadd_rn(v, load_real(y, y_bf16, base + j)), sum_bf16);
      store_real(sum, sum_bf16, base + j, v);
    }
    squares = __fmaf_rn(v, v, squares);
  }
  const float s = inverse_rms(team_sum(squares, warp_sums), cols, eps);
  if (threadIdx.x == 0) rstd[blockIdx.x] = s;
  const void* row = kResidual ? sum : x;
  const bool row_bf16 = kResidual ? sum_bf16 : x_bf16;
  for (std::int64_t j = threadIdx.x; j < cols; j += kLoopThreads) {
    const float o = fmul(fmul(load_real(row, row_bf16, base + j), s), load_real(weight, weight_bf16, j));
    store_real(out, out_bf16, base + j, o);
  }
}

// ---- backward ----
// dx = s (dy w) - x coef with coef = s^3 mean(dy w x); the weight gradient's terms dy x s.

// Teams loop over the rows (the grid covers them a fixed number of times); each thread keeps
// its columns' weight-gradient sums in registers, and the block's teams are added in team
// order (through shared memory) into the block's row of `partials`.
template <int V>
__global__ void __launch_bounds__(kBlockThreads)
    rmsnorm_backward_team_kernel(void* dx, bool dx_bf16, bool accumulate_dx, const void* dout, bool dout_bf16,
                                 const void* __restrict__ x, bool x_bf16, const void* __restrict__ weight,
                                 bool weight_bf16, const float* __restrict__ rstd, float* __restrict__ partials,
                                 std::int64_t rows, std::int64_t cols) {
  wait_for_upstream_grids();
  __shared__ float warp_sums[kBlockThreads / kWarp];
  extern __shared__ float team_columns[];  // [rows per block][cols], when a block has several teams
  const std::int64_t vectors = cols / kVector;
  float dw[V][kVector] = {};
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.y;
  for (std::int64_t first = blockIdx.x * static_cast<std::int64_t>(blockDim.y); first < rows; first += stride) {
    const std::int64_t row = first + threadIdx.y;
    const bool live = row < rows;
    float d[V][kVector], xv[V][kVector];
    float dot = 0.0f;
#pragma unroll
    for (int k = 0; k < V; ++k) {
      const std::int64_t vec = threadIdx.x + k * static_cast<std::int64_t>(blockDim.x);
      if (!live || vec >= vectors) continue;
      float w[kVector];
      load8(dout, dout_bf16, row * cols + vec * kVector, d[k]);
      load8(x, x_bf16, row * cols + vec * kVector, xv[k]);
      load8(weight, weight_bf16, vec * kVector, w);
#pragma unroll
      for (int e = 0; e < kVector; ++e) dot = __fmaf_rn(fmul(d[k][e], w[e]), xv[k][e], dot);
    }
    dot = team_sum(dot, warp_sums);
    if (!live) continue;
    const float s = rstd[row];
    const float coef = fdiv(fmul(fmul(fmul(s, s), s), dot), static_cast<float>(cols));
#pragma unroll
    for (int k = 0; k < V; ++k) {
      const std::int64_t vec = threadIdx.x + k * static_cast<std::int64_t>(blockDim.x);
      if (vec >= vectors) continue;
      const std::int64_t at = row * cols + vec * kVector;
      float w[kVector], g[kVector], old[kVector];
      load8(weight, weight_bf16, vec * kVector, w);
      if (accumulate_dx) load8(dx, dx_bf16, at, old);
#pragma unroll
      for (int e = 0; e < kVector; ++e) {
        g[e] = fsub(fmul(fmul(s, d[k][e]), w[e]), fmul(xv[k][e], coef));
        if (accumulate_dx) g[e] = fadd(old[e], g[e]);
        dw[k][e] = fadd(dw[k][e], fmul(fmul(d[k][e], xv[k][e]), s));
      }
      store8(dx, dx_bf16, at, g);
    }
  }
  float* const block_row = partials + blockIdx.x * cols;
  float* const own = blockDim.y == 1 ? block_row : team_columns + threadIdx.y * cols;
#pragma unroll
  for (int k = 0; k < V; ++k) {
    const std::int64_t vec = threadIdx.x + k * static_cast<std::int64_t>(blockDim.x);
    if (vec >= vectors) continue;
    float4* p = reinterpret_cast<float4*>(own + vec * kVector);
    p[0] = make_float4(dw[k][0], dw[k][1], dw[k][2], dw[k][3]);
    p[1] = make_float4(dw[k][4], dw[k][5], dw[k][6], dw[k][7]);
  }
  if (blockDim.y == 1) return;
  __syncthreads();
  const int threads = static_cast<int>(blockDim.x * blockDim.y);
  for (std::int64_t j = threadIdx.y * blockDim.x + threadIdx.x; j < cols; j += threads) {
    float total = team_columns[j];
    for (unsigned t = 1; t < blockDim.y; ++t) total += team_columns[t * cols + j];
    block_row[j] = total;
  }
}

// A block per row of the grid's share, any width and alignment; the weight-gradient sums
// accumulate in the block's row of `partials` (each column owned by one thread).
__global__ void __launch_bounds__(kLoopThreads)
    rmsnorm_backward_loop_kernel(void* dx, bool dx_bf16, bool accumulate_dx, const void* dout, bool dout_bf16,
                                 const void* __restrict__ x, bool x_bf16, const void* __restrict__ weight,
                                 bool weight_bf16, const float* __restrict__ rstd, float* __restrict__ partials,
                                 std::int64_t rows, std::int64_t cols) {
  wait_for_upstream_grids();
  __shared__ float warp_sums[kLoopThreads / kWarp];
  float* const block_row = partials + blockIdx.x * cols;
  for (std::int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const std::int64_t base = row * cols;
    float dot = 0.0f;
    for (std::int64_t j = threadIdx.x; j < cols; j += kLoopThreads) {
      const float w = load_real(weight, weight_bf16, j);
      dot = __fmaf_rn(fmul(load_real(dout, dout_bf16, base + j), w), load_real(x, x_bf16, base + j), dot);
    }
    dot = team_sum(dot, warp_sums);
    const float s = rstd[row];
    const float coef = fdiv(fmul(fmul(fmul(s, s), s), dot), static_cast<float>(cols));
    const bool first = row == blockIdx.x;
    for (std::int64_t j = threadIdx.x; j < cols; j += kLoopThreads) {
      const float d = load_real(dout, dout_bf16, base + j), xv = load_real(x, x_bf16, base + j);
      float g = fsub(fmul(fmul(s, d), load_real(weight, weight_bf16, j)), fmul(xv, coef));
      if (accumulate_dx) g = fadd(load_real(dx, dx_bf16, base + j), g);
      store_real(dx, dx_bf16, base + j, g);
      const float term = fmul(fmul(d, xv), s);
      block_row[j] = first ? term : fadd(block_row[j], term);
    }
  }
}

// dweight[j] += the blocks' partial sums of column j, added in block order: 32 lanes each sum
// every 32nd block in order, then the lanes' sums are added in lane order.
__global__ void __launch_bounds__(kColumnTile * kColumnLanes)
    add_column_sums_kernel(const float* __restrict__ partials, int blocks, std::int64_t cols, void* dweight,
                           bool dweight_bf16) {
  wait_for_upstream_grids();
  __shared__ float lane_sums[kColumnLanes][kColumnTile + 1];
  const std::int64_t col = blockIdx.x * static_cast<std::int64_t>(kColumnTile) + threadIdx.x;
  float acc = 0.0f;
  if (col < cols) {
    for (int b = static_cast<int>(threadIdx.y); b < blocks; b += kColumnLanes) acc += partials[b * cols + col];
  }
  lane_sums[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y != 0 || col >= cols) return;
  float total = lane_sums[0][threadIdx.x];
  for (int lane = 1; lane < kColumnLanes; ++lane) total += lane_sums[lane][threadIdx.x];
  store_real(dweight, dweight_bf16, col, load_real(dweight, dweight_bf16, col) + total);
}

// ---- host side ----

struct TeamLayout {
  int threads_per_row = 0;  // a multiple of 32
  int rows_per_block = 0;
  int vectors_per_thread = 0;
};

// The team layout for rows of `cols` columns, or none (threads_per_row 0): the looping kernels.
TeamLayout team_layout(std::int64_t cols, std::initializer_list<const void*> pointers) {
  for (const void* p : pointers) {
    if (reinterpret_cast<std::uintptr_t>(p) % 16 != 0) return {};
  }
  if (cols % kVector != 0) return {};
  const std::int64_t vectors = cols / kVector;
  TeamLayout t;
  if (vectors <= kWarp * kMaxVectorsPerThread) {  // a warp per row
    t.threads_per_row = kWarp;
    t.vectors_per_thread = static_cast<int>((vectors + kWarp - 1) / kWarp);
  } else {
    const std::int64_t threads = (vectors + kMaxVectorsPerThread - 1) / kMaxVectorsPerThread;
    if (threads > kMaxTeamThreads) return {};
    t.threads_per_row = static_cast<int>((threads + kWarp - 1) / kWarp * kWarp);
    t.vectors_per_thread = kMaxVectorsPerThread;
  }
  t.rows_per_block = kBlockThreads / t.threads_per_row;
  return t;
}

// Calls f(std::integral_constant<int, V>) for the layout's vectors per thread.
template <class F>
void with_vectors_per_thread(int v, F&& f) {
  switch (v) {
    case 1: f(std::integral_constant<int, 1>{}); break;
    case 2: f(std::integral_constant<int, 2>{}); break;
    case 3: f(std::integral_constant<int, 3>{}); break;
    default: f(std::integral_constant<int, 4>{}); break;
  }
}

bool is_bf16(const Tensor& t) { return t.dtype() == DType::bf16; }

void expect_gpu_real(const Tensor& t, const char* what) {
  if (!t.defined() || t.device() != Device::cuda) {
    throw Error(message(what, ": expected a GPU tensor, got ", t.defined() ? "a CPU tensor" : "none"));
  }
  if (t.dtype() != DType::f32 && t.dtype() != DType::bf16) {
    throw Error(message(what, ": expected an f32 or bf16 tensor, got ", dtype_name(t.dtype())));
  }
}

void expect_matrix_like(const Tensor& t, const Tensor& x, const char* what) {
  expect_gpu_real(t, what);
  if (t.shape() != x.shape()) {
    throw Error(message(what, ": expected shape ", shape_string(x.shape()), ", got ", shape_string(t.shape())));
  }
}

void check_norm_arguments(const char* op, const Tensor& out, const Tensor& rstd, const Tensor& x,
                          const Tensor& weight) {
  expect_gpu_real(x, op);
  if (x.ndim() != 2) throw Error(message(op, ": expected a 2-D input, got shape ", shape_string(x.shape())));
  expect_matrix_like(out, x, "rmsnorm output");
  expect_gpu_real(weight, "rmsnorm weight");
  weight.expect("rmsnorm weight", {x.dim(1)}, weight.dtype());
  rstd.expect("rmsnorm rstd", {x.dim(0)}, DType::f32);
  if (rstd.device() != Device::cuda) throw Error("rmsnorm rstd: expected a GPU tensor, got a CPU tensor");
}

// Both forward operations; y and sum are null for the plain norm.
void launch_forward(Tensor& out, Tensor& rstd, const Tensor& x, const Tensor* y, Tensor* sum, const Tensor& weight,
                    double eps, cudaStream_t stream) {
  const std::int64_t rows = x.dim(0), cols = x.dim(1);
  if (rows == 0) return;
  const bool residual = y != nullptr;
  const void* yp = residual ? y->raw() : nullptr;
  void* sp = residual ? sum->raw() : nullptr;
  const bool y_bf16 = residual && is_bf16(*y), sum_bf16 = residual && is_bf16(*sum);
  const auto e = static_cast<float>(eps);
  auto* r = static_cast<float*>(rstd.raw());
  const TeamLayout t = residual ? team_layout(cols, {x.raw(), yp, sp, weight.raw(), out.raw()})
                                : team_layout(cols, {x.raw(), weight.raw(), out.raw()});
  if (t.threads_per_row == 0 || cols == 0) {
    const auto launch = [&](auto kernel) {
      launch_dependent(kernel, static_cast<unsigned>(rows), kLoopThreads, 0, stream, x.raw(), is_bf16(x), yp, y_bf16, sp, sum_bf16,
                                                                       weight.raw(), is_bf16(weight), out.raw(),
                                                                       is_bf16(out), r, cols, e);
    };
    if (residual) {
      launch(rmsnorm_loop_kernel<true>);
    } else {
      launch(rmsnorm_loop_kernel<false>);
    }
  } else {
    const dim3 block(static_cast<unsigned>(t.threads_per_row), static_cast<unsigned>(t.rows_per_block));
    const auto blocks = static_cast<unsigned>((rows + t.rows_per_block - 1) / t.rows_per_block);
    with_vectors_per_thread(t.vectors_per_thread, [&](auto v) {
      const auto launch = [&](auto kernel) {
        launch_dependent(kernel, blocks, block, 0, stream, x.raw(), is_bf16(x), yp, y_bf16, sp, sum_bf16, weight.raw(),
                                             is_bf16(weight), out.raw(), is_bf16(out), r, rows, cols, e);
      };
      if (residual) {
        launch(rmsnorm_team_kernel<decltype(v)::value, true>);
      } else {
        launch(rmsnorm_team_kernel<decltype(v)::value, false>);
      }
    });
  }
  QUARTET_CUDA_LAUNCHED();
}

}  // namespace

void rmsnorm_forward(Tensor& out, Tensor& rstd, const Tensor& x, const Tensor& weight, double eps, cudaStream_t stream) {
  check_norm_arguments("rmsnorm", out, rstd, x, weight);
  launch_forward(out, rstd, x, nullptr, nullptr, weight, eps, stream);
}

void residual_rmsnorm_forward(Tensor& sum, Tensor& out, Tensor& rstd, const Tensor& x, const Tensor& y,
                              const Tensor& weight, double eps, cudaStream_t stream) {
  check_norm_arguments("residual rmsnorm", out, rstd, x, weight);
  expect_matrix_like(y, x, "residual rmsnorm y");
  expect_matrix_like(sum, x, "residual rmsnorm sum");
  launch_forward(out, rstd, x, &y, &sum, weight, eps, stream);
}

void rmsnorm_backward(Tensor& dx, Tensor& dweight, const Tensor& dout, const Tensor& x, const Tensor& weight,
                      const Tensor& rstd, bool accumulate_dx, cudaStream_t stream) {
  expect_gpu_real(x, "rmsnorm backward x");
  if (x.ndim() != 2) throw Error(message("rmsnorm backward: expected a 2-D input, got shape ", shape_string(x.shape())));
  expect_matrix_like(dout, x, "rmsnorm backward dout");
  expect_matrix_like(dx, x, "rmsnorm backward dx");
  const std::int64_t rows = x.dim(0), cols = x.dim(1);
  expect_gpu_real(weight, "rmsnorm backward weight");
  weight.expect("rmsnorm backward weight", {cols}, weight.dtype());
  expect_gpu_real(dweight, "rmsnorm backward dweight");
  dweight.expect("rmsnorm backward dweight", {cols}, dweight.dtype());
  rstd.expect("rmsnorm backward rstd", {rows}, DType::f32);
  if (rstd.device() != Device::cuda) throw Error("rmsnorm backward rstd: expected a GPU tensor, got a CPU tensor");
  if (rows == 0 || cols == 0) return;

  const TeamLayout t = team_layout(cols, {dx.raw(), dout.raw(), x.raw(), weight.raw()});
  const std::int64_t row_groups = t.threads_per_row ? (rows + t.rows_per_block - 1) / t.rows_per_block : rows;
  const int blocks = static_cast<int>(std::min<std::int64_t>(row_groups, kBackwardBlocks));
  auto partials = device_alloc(static_cast<std::size_t>(blocks * cols) * sizeof(float));
  float* p = ptr<float>(partials);
  const float* r = static_cast<const float*>(rstd.raw());
  if (t.threads_per_row == 0) {
    launch_dependent(rmsnorm_backward_loop_kernel, static_cast<unsigned>(blocks), kLoopThreads, 0, stream,
        dx.raw(), is_bf16(dx), accumulate_dx, dout.raw(), is_bf16(dout), x.raw(), is_bf16(x), weight.raw(),
        is_bf16(weight), r, p, rows, cols);
  } else {
    const dim3 block(static_cast<unsigned>(t.threads_per_row), static_cast<unsigned>(t.rows_per_block));
    const std::size_t shared = t.rows_per_block > 1 ? static_cast<std::size_t>(t.rows_per_block * cols) * sizeof(float) : 0;
    with_vectors_per_thread(t.vectors_per_thread, [&](auto v) {
      launch_dependent(rmsnorm_backward_team_kernel<decltype(v)::value>, static_cast<unsigned>(blocks), block, shared, stream,
          dx.raw(), is_bf16(dx), accumulate_dx, dout.raw(), is_bf16(dout), x.raw(), is_bf16(x), weight.raw(),
          is_bf16(weight), r, p, rows, cols);
    });
  }
  QUARTET_CUDA_LAUNCHED();
  const auto tiles = static_cast<unsigned>((cols + kColumnTile - 1) / kColumnTile);
  launch_dependent(add_column_sums_kernel, tiles, dim3(kColumnTile, kColumnLanes), 0, stream, p, blocks, cols, dweight.raw(),
                                                                                 is_bf16(dweight));
  QUARTET_CUDA_LAUNCHED();
}

}  // namespace quartet::cuda

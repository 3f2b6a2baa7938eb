// SwiGLU on the GPU (ops.h): out = silu(gate) * up on a fused [gate | up] input, and its
// backward, with the CPU twin's formulas (swiglu.cpp) in unfused FP32 operations; only expf
// (CUDA's, within 2 ulp) differs from the CPU's exp.
//
// Element-wise, so the layout is for bandwidth only: a thread handles 8 consecutive features
// of a row (16-byte BF16 accesses) when the width allows, one otherwise. Blocks are 256 threads
// shaped [features, rows] so that narrow rows still fill them.
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/dependent_launch.cuh"
#include "backend/cuda/device_real.cuh"
#include "backend/cuda/message.h"
#include "backend/cuda/ops.h"
#include "quartet/error.h"
#include "quartet/numerics/host_device.h"

namespace quartet::cuda {

namespace {

constexpr int kWarp = 32;
constexpr int kThreads = 256;
constexpr int kVector = 8;  // elements per 16-byte BF16 access (two for FP32)
constexpr unsigned kMaxGridY = 65535;


// W consecutive elements (8: the vector accesses above; 1: scalar).
template <int W>
__device__ __forceinline__ void load_n(const void* base, bool bf16, std::int64_t i, float (&v)[W]) {
  if constexpr (W == kVector) {
    load8(base, bf16, i, v);
  } else {
    v[0] = load_real(base, bf16, i);
  }
}

template <int W>
__device__ __forceinline__ void store_n(void* base, bool bf16, std::int64_t i, const float (&v)[W]) {
  if constexpr (W == kVector) {
    store8(base, bf16, i, v);
  } else {
    store_real(base, bf16, i, v[0]);
  }
}

// ---- the formulas (swiglu.cpp) ----

__device__ __forceinline__ float sigmoid(float g) { return fdiv(1.0f, fadd(1.0f, expf(-g))); }

__device__ __forceinline__ float swiglu(float g, float u) { return fmul(fdiv(g, fadd(1.0f, expf(-g))), u); }

// d/dgate of silu(g) u, times d: d u sig (1 + g (1 - sig)), sig = sigmoid(g).
__device__ __forceinline__ float swiglu_dgate(float d, float g, float u, float sig) {
  return fmul(fmul(fmul(d, u), sig), fadd(1.0f, fmul(g, fsub(1.0f, sig))));
}

// ---- kernels: thread (x, y) of the grid handles W features of one row ----
// Rows beyond 65535 blocks' worth take a stride over gridDim.y.

// out [rows, f] = silu(gate) * up; gate_up [rows, 2f].
template <int W>
__global__ void __launch_bounds__(kThreads)
    swiglu_forward_kernel(const void* __restrict__ gate_up, bool gate_up_bf16, void* __restrict__ out, bool out_bf16,
                          std::int64_t rows, std::int64_t f) {
  wait_for_upstream_grids();
  const std::int64_t j = (blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x) * W;
  if (j >= f) return;
  for (std::int64_t row = blockIdx.y * static_cast<std::int64_t>(blockDim.y) + threadIdx.y; row < rows;
       row += static_cast<std::int64_t>(gridDim.y) * blockDim.y) {
    float g[W], u[W], o[W];
    load_n<W>(gate_up, gate_up_bf16, row * 2 * f + j, g);
    load_n<W>(gate_up, gate_up_bf16, row * 2 * f + f + j, u);
#pragma unroll
    for (int e = 0; e < W; ++e) o[e] = swiglu(g[e], u[e]);
    store_n<W>(out, out_bf16, row * f + j, o);
  }
}

// dgate_up [rows, 2f] = [d u sig (1 + g (1 - sig)) | d silu(g)]. dgate_up may be gate_up itself:
// each element is read before it is written, by the thread that writes it.
template <int W>
__global__ void __launch_bounds__(kThreads)
    swiglu_backward_kernel(const void* gate_up, bool gate_up_bf16, const void* __restrict__ dout, bool dout_bf16,
                           void* dgate_up, bool dgate_up_bf16, std::int64_t rows, std::int64_t f) {
  wait_for_upstream_grids();
  const std::int64_t j = (blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x) * W;
  if (j >= f) return;
  for (std::int64_t row = blockIdx.y * static_cast<std::int64_t>(blockDim.y) + threadIdx.y; row < rows;
       row += static_cast<std::int64_t>(gridDim.y) * blockDim.y) {
    float g[W], u[W], d[W], dg[W], du[W];
    load_n<W>(gate_up, gate_up_bf16, row * 2 * f + j, g);
    load_n<W>(gate_up, gate_up_bf16, row * 2 * f + f + j, u);
    load_n<W>(dout, dout_bf16, row * f + j, d);
#pragma unroll
    for (int e = 0; e < W; ++e) {
      const float sig = sigmoid(g[e]);
      dg[e] = swiglu_dgate(d[e], g[e], u[e], sig);
      du[e] = fmul(d[e], fmul(g[e], sig));
    }
    store_n<W>(dgate_up, dgate_up_bf16, row * 2 * f + j, dg);
    store_n<W>(dgate_up, dgate_up_bf16, row * 2 * f + f + j, du);
  }
}

// ---- host side ----

struct Launch {
  dim3 grid, block;
  bool vectorised = false;
};

// [features, rows] blocks of 256 threads: as many feature groups as a row has (up to 256,
// rounded to a warp), the rest of the block along the rows.
Launch launch_shape(std::int64_t rows, std::int64_t f, bool vectorised) {
  const std::int64_t groups = vectorised ? f / kVector : f;
  const std::int64_t x = std::min<std::int64_t>(kThreads, (groups + kWarp - 1) / kWarp * kWarp);
  const std::int64_t y = kThreads / x;
  Launch l;
  l.vectorised = vectorised;
  l.block = dim3(static_cast<unsigned>(x), static_cast<unsigned>(y));
  l.grid = dim3(static_cast<unsigned>((groups + x - 1) / x),
                static_cast<unsigned>(std::min<std::int64_t>((rows + y - 1) / y, kMaxGridY)));
  return l;
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

// The half width f of a [rows, 2f] gate|up input.
std::int64_t half_width(const Tensor& gate_up, const char* op) {
  expect_gpu_real(gate_up, op);
  if (gate_up.ndim() != 2 || gate_up.dim(1) % 2 != 0) {
    throw Error(message(op, ": expected a 2-D gate|up input of even width, got shape ", shape_string(gate_up.shape())));
  }
  return gate_up.dim(1) / 2;
}

void expect_shape(const Tensor& t, const Shape& shape, const char* what) {
  expect_gpu_real(t, what);
  if (t.shape() != shape) {
    throw Error(message(what, ": expected shape ", shape_string(shape), ", got ", shape_string(t.shape())));
  }
}

}  // namespace

void swiglu_forward(Tensor& out, const Tensor& gate_up, cudaStream_t stream) {
  const std::int64_t f = half_width(gate_up, "swiglu");
  const std::int64_t rows = gate_up.dim(0);
  expect_shape(out, {rows, f}, "swiglu output");
  if (rows == 0 || f == 0) return;
  const Launch l = launch_shape(rows, f, f % kVector == 0 && aligned16(gate_up.raw()) && aligned16(out.raw()));
  if (l.vectorised) {
    launch_dependent(swiglu_forward_kernel<kVector>, l.grid, l.block, 0, stream, gate_up.raw(), is_bf16(gate_up), out.raw(),
                                                                   is_bf16(out), rows, f);
  } else {
    launch_dependent(swiglu_forward_kernel<1>, l.grid, l.block, 0, stream, gate_up.raw(), is_bf16(gate_up), out.raw(), is_bf16(out),
                                                             rows, f);
  }
  QUARTET_CUDA_LAUNCHED();
}

void swiglu_backward(Tensor& dgate_up, const Tensor& dout, const Tensor& gate_up, cudaStream_t stream) {
  const std::int64_t f = half_width(gate_up, "swiglu backward");
  const std::int64_t rows = gate_up.dim(0);
  expect_shape(dout, {rows, f}, "swiglu backward dout");
  expect_shape(dgate_up, gate_up.shape(), "swiglu backward dgate_up");
  if (rows == 0 || f == 0) return;
  const bool vectorised =
      f % kVector == 0 && aligned16(gate_up.raw()) && aligned16(dout.raw()) && aligned16(dgate_up.raw());
  const Launch l = launch_shape(rows, f, vectorised);
  if (l.vectorised) {
    launch_dependent(swiglu_backward_kernel<kVector>, l.grid, l.block, 0, stream, gate_up.raw(), is_bf16(gate_up), dout.raw(),
                                                                    is_bf16(dout), dgate_up.raw(), is_bf16(dgate_up),
                                                                    rows, f);
  } else {
    launch_dependent(swiglu_backward_kernel<1>, l.grid, l.block, 0, stream, gate_up.raw(), is_bf16(gate_up), dout.raw(),
                                                              is_bf16(dout), dgate_up.raw(), is_bf16(dgate_up), rows, f);
  }
  QUARTET_CUDA_LAUNCHED();
}

}  // namespace quartet::cuda

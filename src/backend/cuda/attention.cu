// Causal self-attention with RoPE and grouped-query heads on the GPU through the fused kernels
// of flash_attention.cuh (head dims 64 and 128; other shapes take the reference kernels, see
// backend.cpp). Forward: a RoPE pass writes the rotated q and k in BF16 (the tensor cores' input
// type), then one kernel computes the output and each row's log-sum-exp. The forward pass keeps
// its output, the log-sum-exp and the rotated q and k (as the backward of PyTorch's attention
// keeps its rotated inputs: a RoPE pass more per layer costs more time than the buffer costs
// memory); the backward pass computes rowsum(dO * O) and runs the backward kernels
// (flash_attention_backward.cuh; on warpgroup products flash_attention_backward_wgmma.cuh), whose
// split forms rotate dQ and dK back in their epilogues; the fused form leaves them in FP32 for a
// RoPE pass.
//
// Numerics against the CPU, which keeps rotated q and k and the probabilities in FP32: here q, k
// and the probabilities are rounded to BF16 before each tensor-core product (FP32 accumulation,
// FP32 softmax statistics). The tests bound the difference against an FP64 reference.
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <tuple>
#include <type_traits>
#include <vector>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/dependent_launch.cuh"
#include "backend/cuda/device_caps.h"
#include "backend/cuda/device_memory.h"
#include "backend/cuda/env_switch.h"
#include "backend/cuda/device_real.cuh"
#include "backend/cuda/flash_attention_backward.cuh"
#include "backend/cuda/flash_attention_backward_wgmma.cuh"
#include "backend/cuda/flash_attention_wgmma.cuh"
#include "backend/cuda/message.h"
#include "backend/cuda/ops.h"
#include "backend/cuda/rope_device_tables.h"
#include "quartet/backend/rope_tables.h"
#include "quartet/error.h"
#include "quartet/numerics/host_device.h"

namespace quartet::cuda {

namespace {

using flash::bf16;

constexpr int kThreads = 256;

unsigned blocks_for(std::int64_t n) {
  const std::int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(b < (std::int64_t{1} << 31) - 1 ? (b > 0 ? b : 1) : (std::int64_t{1} << 31) - 1);
}

struct Dims {
  int batch, seq, heads, kv_heads, head_dim;
  std::int64_t width;     // qkv row: (heads + 2 kv_heads) * head_dim
  std::int64_t qk_width;  // rotated q|k row: (heads + kv_heads) * head_dim
  __host__ __device__ std::int64_t tokens() const { return static_cast<std::int64_t>(batch) * seq; }
};

Dims dims_of(const AttentionShape& s) {
  return {static_cast<int>(s.batch), static_cast<int>(s.seq), static_cast<int>(s.heads), static_cast<int>(s.kv_heads),
          static_cast<int>(s.head_dim), s.qkv_width(), (s.heads + s.kv_heads) * s.head_dim};
}

// Eight rotate-half pairs (i, i + D/2) per thread. Inverse: the transpose of the rotation (for
// gradients). Unfused FP32 operations in the CPU's order.
template <bool Inverse, class In>
__global__ void rope_kernel(const In* __restrict__ in, std::int64_t in_stride, bf16* __restrict__ out,
                            std::int64_t out_stride, const float* __restrict__ cos_t, const float* __restrict__ sin_t,
                            Dims d) {
  wait_for_upstream_grids();
  const int half = d.head_dim / 2, per_slot = half / 8, slots = d.heads + d.kv_heads;
  const std::int64_t items = d.tokens() * slots * per_slot;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < items;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const int part = static_cast<int>(i % per_slot), slot = static_cast<int>(i / per_slot % slots);
    const std::int64_t token = i / per_slot / slots;
    const int pos = static_cast<int>(token % d.seq), j0 = part * 8;
    const In* x = in + token * in_stride + static_cast<std::int64_t>(slot) * d.head_dim;
    bf16* y = out + token * out_stride + static_cast<std::int64_t>(slot) * d.head_dim;
    const std::int64_t table = static_cast<std::int64_t>(pos) * half + j0;
    float lo[8], hi[8], cs[8], sn[8], first[8], second[8];
    constexpr bool kBf16In = std::is_same_v<In, bf16>;
    load8(x, kBf16In, j0, lo);
    load8(x, kBf16In, j0 + half, hi);
    load8(cos_t, false, table, cs);
    load8(sin_t, false, table, sn);
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      const float a = lo[e], b = hi[e], c = cs[e], s = sn[e];
      first[e] = Inverse ? fadd(fmul(a, c), fmul(b, s)) : fsub(fmul(a, c), fmul(b, s));
      second[e] = Inverse ? fsub(fmul(b, c), fmul(a, s)) : fadd(fmul(b, c), fmul(a, s));
    }
    store8(y, true, j0, first);
    store8(y, true, j0 + half, second);
  }
}

// delta[b][h][t] = sum_d dO * O (FP32). A row (token, head) of head_dim values is contiguous in
// both inputs; each of its D/8 lanes takes eight values with one 16-byte load from each (D 64:
// four rows a warp, 128: two), and the row's lanes add their sums by shuffles. Every thread of
// the grid runs the same number of loop trips (the row count is rounded up), so that the
// shuffles always have their whole warp.
template <int D>
__global__ void delta_kernel(const bf16* __restrict__ dout, const bf16* __restrict__ out, float* __restrict__ delta,
                             Dims d) {
  wait_for_upstream_grids();
  constexpr int kLanesPerRow = D / 8;
  const std::int64_t rows = d.tokens() * d.heads;
  const std::int64_t threads = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  const std::int64_t first = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  const std::int64_t slots = (rows * kLanesPerRow + threads - 1) / threads * threads;
  for (std::int64_t i = first; i < slots; i += threads) {
    const std::int64_t r = i / kLanesPerRow;
    const int part = static_cast<int>(i % kLanesPerRow);
    float sum = 0.0f;
    if (r < rows) {
      const std::int64_t at = r * D + part * 8;
      const uint4 g = *reinterpret_cast<const uint4*>(dout + at);
      const uint4 o = *reinterpret_cast<const uint4*>(out + at);
      const auto* g2 = reinterpret_cast<const __nv_bfloat162*>(&g);
      const auto* o2 = reinterpret_cast<const __nv_bfloat162*>(&o);
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        sum += __low2float(g2[e]) * __low2float(o2[e]) + __high2float(g2[e]) * __high2float(o2[e]);
      }
    }
#pragma unroll
    for (int off = kLanesPerRow / 2; off > 0; off /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, off);
    if (r < rows && part == 0) {
      const std::int64_t token = r / d.heads, b = token / d.seq, t = token % d.seq;
      const int h = static_cast<int>(r % d.heads);
      delta[(b * d.heads + h) * d.seq + t] = sum;
    }
  }
}

struct FlashSaved {
  Tensor out;  // the forward output (shares the caller's buffer)
  std::shared_ptr<void> lse;
  std::shared_ptr<void> qk;  // the rotated q and k, [tokens, qk_width] BF16
};

void check_flash_inputs(const AttentionShape& s, const Tensor& qkv, const char* what) {
  if (!flash_attention_supports(s)) {
    throw Error(message(what, ": the fused kernels take head dims 64 and 128, got ", s.head_dim));
  }
  if (s.batch < 1 || s.seq < 1 || s.kv_heads < 1 || s.heads % s.kv_heads != 0) {
    throw Error(message(what, ": invalid shape (batch ", s.batch, ", seq ", s.seq, ", heads ", s.heads, ", kv heads ",
                        s.kv_heads, ")"));
  }
  if (s.seq > (std::int64_t{1} << 30) || s.tokens() * s.qkv_width() >= (std::int64_t{1} << 40)) {
    throw Error(message(what, ": sequence ", s.seq, " x batch ", s.batch, " is beyond the kernels' index range"));
  }
  if (qkv.device() != Device::cuda || qkv.dtype() != DType::bf16 || qkv.ndim() != 2 || qkv.dim(0) != s.tokens() ||
      qkv.dim(1) != s.qkv_width()) {
    throw Error(message(what, ": qkv must be a bf16 GPU tensor [", s.tokens(), ", ", s.qkv_width(), "], got ",
                        shape_string(qkv.shape()), " ", dtype_name(qkv.dtype())));
  }
}

std::shared_ptr<void> rotated_qk(const Tensor& qkv, const Dims& d, const RopeTables& tables, cudaStream_t stream) {
  auto qk = device_alloc(static_cast<std::size_t>(d.tokens() * d.qk_width) * sizeof(bf16));
  const std::int64_t items = d.tokens() * (d.heads + d.kv_heads) * (d.head_dim / 16);
  launch_dependent(rope_kernel<false, bf16>, blocks_for(items), kThreads, 0, stream,
      static_cast<const bf16*>(qkv.raw()), d.width, ptr<bf16>(qk), d.qk_width, ptr<float>(tables.cos),
      ptr<float>(tables.sin), d);
  QUARTET_CUDA_LAUNCHED();
  return qk;
}

// The fields both passes' arguments share: the rotated q and k in `qk`, v in `qkv`, the shape,
// the row strides and the softmax scale.
template <class Args>
void set_common_args(Args& args, const std::shared_ptr<void>& qk, const Tensor& qkv, const Dims& d) {
  args.q = ptr<bf16>(qk);
  args.k = ptr<bf16>(qk) + static_cast<std::int64_t>(d.heads) * d.head_dim;
  args.v = static_cast<const bf16*>(qkv.raw()) + static_cast<std::int64_t>(d.heads + d.kv_heads) * d.head_dim;
  args.seq = d.seq;
  args.heads = d.heads;
  args.group = d.heads / d.kv_heads;
  args.qk_stride = d.qk_width;
  args.v_stride = d.width;
  args.out_stride = static_cast<std::int64_t>(d.heads) * d.head_dim;
  args.scale = 1.0f / std::sqrt(static_cast<float>(d.head_dim));
  args.scale_log2 = args.scale * 1.4426950408889634f;
}

template <int D, int Warps, int Keys>
void launch_forward_shape(const flash::ForwardArgs& args, const Dims& d, cudaStream_t stream) {
  constexpr int bytes = flash::forward_shared_bytes<D, Warps, Keys>();
  static const bool configured = (allow_shared_bytes(flash::forward_kernel<D, Warps, Keys>, bytes), true);
  (void)configured;
  const dim3 grid((d.seq + Warps * 16 - 1) / (Warps * 16), d.heads, d.batch);
  launch_dependent(flash::forward_kernel<D, Warps, Keys>, grid, Warps * 32, bytes, stream, args);
  QUARTET_CUDA_LAUNCHED();
}

// Eight warps (16 query rows each) per forward block, which load each key tile for twice as
// many rows as four do; 128 keys per step at head dim 128, 64 at head dim 64, where the wider
// step was slower (docs/cuda.md, "Attention block shapes").
// The forward kernel: at head dim 128 on an sm_90 GPU the wgmma kernel
// (flash_attention_wgmma.cuh), unless the environment variable QUARTET_ATTENTION_FORWARD is
// "mma" (read at every call, so that tests and benchmarks can compare the two in one process);
// otherwise eight warps (16 query rows each) per block on mma.sync, 128 keys per step at head
// dim 128 and 64 at head dim 64, where the wider step was slower (docs/cuda.md, "Attention
// block shapes").
bool wgmma_forward_chosen() { return env_keeps_usual("QUARTET_ATTENTION_FORWARD", "wgmma", "mma"); }

template <int D>
void launch_forward(const flash::ForwardArgs& args, const Dims& d, cudaStream_t stream) {
  const bool wgmma = wgmma_forward_chosen();  // checked at every head dim
  if constexpr (D == 128) {
    if (wgmma && device_has_wgmma()) {
      constexpr int bytes = flash::forward_wgmma_shared_bytes();
      static const bool configured = (allow_shared_bytes(flash::forward_wgmma_kernel, bytes), true);
      (void)configured;
      const dim3 grid((d.seq + flash::kWgmmaRows - 1) / flash::kWgmmaRows, d.heads, d.batch);
      launch_dependent(flash::forward_wgmma_kernel, grid, flash::kWgmmaThreads, bytes, stream, args);
      QUARTET_CUDA_LAUNCHED();
      return;
    }
  }
  launch_forward_shape<D, 8, D == 128 ? 128 : 64>(args, d, stream);
}

// The backward kernels, chosen by the environment variable QUARTET_ATTENTION_BACKWARD (read at
// every call, so that tests and benchmarks can compare them in one process): "split" (the
// default: dK/dV and dQ kernels on mma.sync, flash_attention_backward.cuh; faster than fused at
// seq 2048, as fast at seq 1024, docs/cuda.md), "fused" (one persistent kernel adding dQ in
// order), or "wgmma" (the split kernels on warpgroup products, flash_attention_backward_wgmma.cuh,
// on an sm_90 GPU; the split kernels elsewhere).
enum class BackwardKernels { split, fused, wgmma };

BackwardKernels backward_kernels() {
  return static_cast<BackwardKernels>(env_choice("QUARTET_ATTENTION_BACKWARD", {"split", "fused", "wgmma"}));
}

// Blocks of the fused kernel that fit on the device at once: it is persistent.
template <int D>
int fused_backward_blocks() {
  static const int blocks = [] {
    int per_sm = 0;
    const int sms = multiprocessors();
    QUARTET_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, flash::fused_backward_kernel<D>,
                                                                     flash::kKeyWarps * 32, flash::fused_shared_bytes<D>()));
    return sms * (per_sm > 0 ? per_sm : 1);
  }();
  return blocks;
}

template <int D>
void launch_backward_wgmma(const flash::BackwardArgs& args, const Dims& d, cudaStream_t stream) {
  constexpr int key_bytes = flash::key_gradient_wgmma_shared_bytes<D>();
  constexpr int query_bytes = flash::query_gradient_wgmma_shared_bytes<D>();
  static const bool configured = (allow_shared_bytes(flash::key_gradient_wgmma_kernel<D>, key_bytes),
                                  allow_shared_bytes(flash::query_gradient_wgmma_kernel<D>, query_bytes), true);
  (void)configured;
  const dim3 query_grid((d.seq + flash::kWgmmaQueryBlock - 1) / flash::kWgmmaQueryBlock, d.heads, d.batch);
  launch_dependent(flash::query_gradient_wgmma_kernel<D>, query_grid, flash::kWgmmaBackwardThreads, query_bytes, stream, args);
  QUARTET_CUDA_LAUNCHED();
  const dim3 key_grid((d.seq + flash::kWgmmaKeyBlock - 1) / flash::kWgmmaKeyBlock, d.kv_heads, d.batch);
  launch_dependent(flash::key_gradient_wgmma_kernel<D>, key_grid, flash::kWgmmaBackwardThreads, key_bytes, stream, args);
  QUARTET_CUDA_LAUNCHED();
}

template <int D>
void launch_backward(flash::BackwardArgs args, bool fused, const Dims& d, cudaStream_t stream) {
  constexpr int key_bytes = flash::key_shared_bytes<D>(), query_bytes = flash::query_shared_bytes<D>();
  constexpr int fused_bytes = flash::fused_shared_bytes<D>();
  static const bool configured = (allow_shared_bytes(flash::key_gradient_kernel<D>, key_bytes),
                                  allow_shared_bytes(flash::query_gradient_kernel<D>, query_bytes),
                                  allow_shared_bytes(flash::fused_backward_kernel<D>, fused_bytes), true);
  (void)configured;
  const int key_blocks = (d.seq + flash::kKeyRows - 1) / flash::kKeyRows;
  if (fused) {
    // The task counter, then the dQ-addition counters, zeroed.
    const std::int64_t q_blocks = (d.seq + flash::key_query_rows<D>() - 1) / flash::key_query_rows<D>();
    const std::int64_t counters = 1 + static_cast<std::int64_t>(d.batch) * d.heads * q_blocks;
    auto order = device_alloc(static_cast<std::size_t>(counters) * sizeof(int));
    QUARTET_CUDA_CHECK(cudaMemsetAsync(order.get(), 0, static_cast<std::size_t>(counters) * sizeof(int), stream));
    args.next_task = ptr<int>(order);
    args.dq_added = ptr<int>(order) + 1;
    args.batch = d.batch;
    args.kv_heads = d.kv_heads;
    const std::int64_t tasks = static_cast<std::int64_t>(key_blocks) * d.kv_heads * d.batch;
    const int grid = static_cast<int>(std::min<std::int64_t>(tasks, fused_backward_blocks<D>()));
    launch_dependent(flash::fused_backward_kernel<D>, grid, flash::kKeyWarps * 32, fused_bytes, stream, args);
    QUARTET_CUDA_LAUNCHED();
    return;  // `order` is released in stream order
  }
  const dim3 query_grid((d.seq + flash::kQueryRows - 1) / flash::kQueryRows, d.heads, d.batch);
  launch_dependent(flash::query_gradient_kernel<D>, query_grid, flash::kQueryWarps * 32, query_bytes, stream, args);
  QUARTET_CUDA_LAUNCHED();
  const dim3 key_grid(key_blocks, d.kv_heads, d.batch);
  launch_dependent(flash::key_gradient_kernel<D>, key_grid, flash::kKeyWarps * 32, key_bytes, stream, args);
  QUARTET_CUDA_LAUNCHED();
}

}  // namespace

bool flash_attention_supports(const AttentionShape& shape) { return shape.head_dim == 64 || shape.head_dim == 128; }

void attention_forward(Tensor& out, AttentionSaved& saved, const Tensor& qkv, const AttentionShape& s,
                       cudaStream_t stream) {
  check_flash_inputs(s, qkv, "attention");
  out.expect("attention output", {s.tokens(), s.q_width()}, DType::bf16);
  if (out.device() != Device::cuda) throw Error("attention: the output must be a GPU tensor");
  const Dims d = dims_of(s);
  const RopeTables& tables = device_rope_tables(s.seq, s.head_dim, s.rope_theta);
  auto st = std::make_shared<FlashSaved>();
  st->qk = rotated_qk(qkv, d, tables, stream);
  st->out = out;
  st->lse = device_alloc(static_cast<std::size_t>(d.tokens() * d.heads) * sizeof(float));

  flash::ForwardArgs args{};
  set_common_args(args, st->qk, qkv, d);
  args.out = static_cast<bf16*>(out.raw());
  args.lse = ptr<float>(st->lse);
  if (d.head_dim == 64) {
    launch_forward<64>(args, d, stream);
  } else {
    launch_forward<128>(args, d, stream);
  }
  saved.impl = st;
}

void attention_backward(Tensor& dqkv, const Tensor& dout, const Tensor& qkv, const AttentionSaved& saved,
                        const AttentionShape& s, cudaStream_t stream) {
  check_flash_inputs(s, qkv, "attention backward");
  dout.expect("attention backward dout", {s.tokens(), s.q_width()}, DType::bf16);
  dqkv.expect("attention backward dqkv", qkv.shape(), DType::bf16);
  if (dout.device() != Device::cuda || dqkv.device() != Device::cuda) {
    throw Error("attention backward: dout and dqkv must be GPU tensors");
  }
  const auto* st = static_cast<const FlashSaved*>(saved.impl.get());
  if (st == nullptr || !st->lse || !st->qk) {
    throw Error("attention backward: the forward pass (fused kernels) saved nothing");
  }
  if (!aligned16(dout.raw()) || !aligned16(dqkv.raw()) || !aligned16(st->out.raw())) {
    throw Error("attention backward: the fused kernels need dout, dqkv and the forward's output at 16-byte aligned "
                "addresses");
  }
  const Dims d = dims_of(s);
  const RopeTables& tables = device_rope_tables(s.seq, s.head_dim, s.rope_theta);

  auto delta = device_alloc(static_cast<std::size_t>(d.tokens() * d.heads) * sizeof(float));
  const unsigned delta_blocks = blocks_for(d.tokens() * d.heads * (d.head_dim / 8));
  const auto* dout_bf16 = static_cast<const bf16*>(dout.raw());
  const auto* out_bf16 = static_cast<const bf16*>(st->out.raw());
  if (d.head_dim == 64) {
    launch_dependent(delta_kernel<64>, delta_blocks, kThreads, 0, stream, dout_bf16, out_bf16, ptr<float>(delta), d);
  } else {
    launch_dependent(delta_kernel<128>, delta_blocks, kThreads, 0, stream, dout_bf16, out_bf16, ptr<float>(delta), d);
  }
  QUARTET_CUDA_LAUNCHED();

  const BackwardKernels kernels = backward_kernels();  // checked at every head dim
  const bool fused = kernels == BackwardKernels::fused;
  const bool wgmma = kernels == BackwardKernels::wgmma && device_has_wgmma();
  bf16* const dq_out = static_cast<bf16*>(dqkv.raw());
  bf16* const dk_out = dq_out + static_cast<std::int64_t>(d.heads) * d.head_dim;
  flash::BackwardArgs args{};
  set_common_args(args, st->qk, qkv, d);
  args.dout = static_cast<const bf16*>(dout.raw());
  args.lse = ptr<float>(st->lse);
  args.delta = ptr<float>(delta);
  args.dv = dq_out + static_cast<std::int64_t>(d.heads + d.kv_heads) * d.head_dim;
  args.dv_stride = d.width;
  std::shared_ptr<void> dqk;  // the fused kernel's FP32 dQ and dK
  if (fused) {
    dqk = device_alloc(static_cast<std::size_t>(d.tokens() * d.qk_width) * sizeof(float));
    args.dq = ptr<float>(dqk);
    args.dk = ptr<float>(dqk) + static_cast<std::int64_t>(d.heads) * d.head_dim;
    args.dqk_stride = d.qk_width;
  } else {
    args.dq_unrotated = dq_out;
    args.dk_unrotated = dk_out;
    args.rope_cos = ptr<float>(tables.cos);
    args.rope_sin = ptr<float>(tables.sin);
  }
  if (wgmma && d.head_dim == 64) {
    launch_backward_wgmma<64>(args, d, stream);
  } else if (wgmma) {
    launch_backward_wgmma<128>(args, d, stream);
  } else if (d.head_dim == 64) {
    launch_backward<64>(args, fused, d, stream);
  } else {
    launch_backward<128>(args, fused, d, stream);
  }
  if (!fused) return;

  const std::int64_t items = d.tokens() * (d.heads + d.kv_heads) * (d.head_dim / 16);
  launch_dependent(rope_kernel<true, float>, blocks_for(items), kThreads, 0, stream, ptr<float>(dqk), d.qk_width,
                                                                dq_out, d.width, ptr<float>(tables.cos),
                                                                ptr<float>(tables.sin), d);
  QUARTET_CUDA_LAUNCHED();
}

}  // namespace quartet::cuda

// Flash attention (causal, grouped-query heads) on BF16 tensor cores: the forward kernel behind
// attention.cu and the pieces its backward kernels (flash_attention_backward.cuh) share. Scores
// and probabilities live only in registers, a block at a time, with the softmax's running
// maximum and sum in FP32 (online softmax), so memory grows linearly with the sequence; the
// forward pass saves only the log-sum-exp of each row.
//
// Layouts (element strides given by the caller): q and k are the rotated heads of a BF16
// [tokens, (heads + kv_heads) * D] buffer (attention.cu's RoPE pass), v the v heads of the
// model's qkv tensor, out [tokens, heads * D]; lse and delta are FP32 [batch, heads, seq].
#pragma once

#include <cuda_bf16.h>
#include "backend/cuda/dependent_launch.cuh"

#include <cmath>
#include <cstdint>

#include "backend/cuda/tensor_core.cuh"

namespace quartet::cuda::flash {

using bf16 = __nv_bfloat16;

struct ForwardArgs {
  const bf16* q;  // head 0 of the rotated q; row stride qk_stride
  const bf16* k;  // kv head 0 of the rotated k; row stride qk_stride
  const bf16* v;  // kv head 0 of v; row stride v_stride
  bf16* out;      // head 0 of the output; row stride out_stride
  float* lse;     // natural-log log-sum-exp of the scaled scores, [batch, heads, seq]
  int seq, heads, group;  // group = heads / kv_heads
  std::int64_t qk_stride, v_stride, out_stride;
  float scale;       // 1 / sqrt(D)
  float scale_log2;  // scale * log2(e)
};

struct BackwardArgs {
  const bf16* q;
  const bf16* k;
  const bf16* v;
  const bf16* dout;     // head 0 of dO; row stride out_stride
  const float* lse;     // from the forward pass
  const float* delta;   // rowsum(dO * O) per (batch, head, query)
  // The fused kernel: dQ and dK in the rotated domain, FP32 (row stride dqk_stride), which a
  // RoPE pass turns back afterwards. The split kernels: dQ and dK rotated back in their epilogues,
  // BF16, row stride dv_stride (the rows of dQKV), with the RoPE tables (cos, sin: [seq][D/2]).
  float* dq;            // head 0 of dQ
  float* dk;            // kv head 0 of dK
  bf16* dq_unrotated;   // head 0 of dQ
  bf16* dk_unrotated;   // kv head 0 of dK
  const float* rope_cos;
  const float* rope_sin;
  bf16* dv;             // kv head 0 of dV; row stride dv_stride
  int seq, heads, group;
  std::int64_t qk_stride, v_stride, out_stride, dqk_stride, dv_stride;
  float scale, scale_log2;
  // The fused backward only (zeroed before it runs): the next task for a persistent block, and per
  // (batch, head, query block) how many key blocks have added their dQ contribution so far.
  int* next_task;
  int* dq_added;
  int batch, kv_heads;
};

// Rows [row0, row0 + Rows) of a matrix (row stride `stride`, D columns from `base`) into a
// swizzled tile; rows at or beyond `rows` are zero-filled.
template <int Rows, int D, int Threads>
__device__ __forceinline__ void load_tile_async(std::uint32_t tile, const bf16* base, std::int64_t stride, int row0,
                                                int rows) {
  using Tile = SwizzledTile<Rows, D>;
  constexpr int kChunks = Rows * Tile::kChunks;
  static_assert(kChunks % Threads == 0, "every thread copies the same number of chunks");
#pragma unroll
  for (int i = threadIdx.x; i < kChunks; i += Threads) {
    const int r = i / Tile::kChunks, chunk = i % Tile::kChunks;
    const bool valid = row0 + r < rows;
    const bf16* src = base + (valid ? static_cast<std::int64_t>(row0 + r) * stride : 0) + chunk * 8;
    copy_async_16(tile + Tile::offset(r, chunk), src, valid);
  }
}

// ldmatrix addresses, per lane, for the three operand shapes the kernels read from a tile:
// an A fragment (16 rows from `row`, k-chunks 2 kk and 2 kk + 1);
template <class Tile>
__device__ __forceinline__ std::uint32_t a_fragment_address(std::uint32_t tile, int row, int kk, int lane) {
  return tile + Tile::offset(row + (lane & 15), 2 * kk + (lane >> 4));
}
// B fragments of two n-tiles (rows n0..n0+15 of an [n][k] tile, k-chunks 2 kk, 2 kk + 1);
template <class Tile>
__device__ __forceinline__ std::uint32_t b_fragment_address(std::uint32_t tile, int n0, int kk, int lane) {
  return tile + Tile::offset(n0 + (lane & 7) + ((lane >> 4) << 3), 2 * kk + ((lane >> 3) & 1));
}
// B fragments of two n-tiles read transposed from a [k][n] tile (rows k0..k0+15, n-chunks
// 2 np and 2 np + 1).
template <class Tile>
__device__ __forceinline__ std::uint32_t bt_fragment_address(std::uint32_t tile, int k0, int np, int lane) {
  return tile + Tile::offset(k0 + (lane & 7) + (((lane >> 3) & 1) << 3), 2 * np + (lane >> 4));
}

// C fragments of two 8-wide n-tiles (2 kk, 2 kk + 1) as the A fragment of one 16-wide k-tile.
__device__ __forceinline__ void c_to_a_fragment(std::uint32_t (&a)[4], const float (&c0)[4], const float (&c1)[4]) {
  a[0] = pack_bf16(c0[0], c0[1]);
  a[1] = pack_bf16(c0[2], c0[3]);
  a[2] = pack_bf16(c1[0], c1[1]);
  a[3] = pack_bf16(c1[2], c1[3]);
}

// ---- forward: a block of Warps x 16 queries, Keys keys at a time ---------------------------

// One key block of the online softmax for this thread's rows my_row0 + g and + 8 (scores s of
// NTiles 8-key tiles from key0, in the C-fragment layout both forward kernels share): masks keys
// after the query, updates the running maximum and sum, turns s into probabilities and rescales
// the output accumulated so far.
template <int NTiles, int OTiles>
__device__ __forceinline__ void online_softmax_step(float (&s)[NTiles][4], float (&o)[OTiles][4], int key0, int my_row0,
                                                    int g, int c, float scale_log2, float (&row_max)[2],
                                                    float (&row_sum)[2]) {
  if (key0 + NTiles * 8 - 1 > my_row0) {  // the diagonal crosses this warp's rows: mask keys after the query
#pragma unroll
    for (int nt = 0; nt < NTiles; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = key0 + nt * 8 + 2 * c + (e & 1), row = my_row0 + g + (e >> 1) * 8;
        if (key > row) s[nt][e] = -INFINITY;
      }
    }
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float mx = row_max[r];
#pragma unroll
    for (int nt = 0; nt < NTiles; ++nt) mx = fmaxf(mx, fmaxf(s[nt][2 * r], s[nt][2 * r + 1]));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    const float base = mx == -INFINITY ? 0.0f : mx * scale_log2;
    const float correction = exp2f(row_max[r] * scale_log2 - base);
    row_max[r] = mx;
    float sum = 0.0f;
#pragma unroll
    for (int nt = 0; nt < NTiles; ++nt) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const float p = exp2f(fmaf(s[nt][2 * r + e], scale_log2, -base));
        s[nt][2 * r + e] = p;
        sum += p;
      }
    }
    row_sum[r] = row_sum[r] * correction + sum;  // this thread's columns; summed over lanes at the end
#pragma unroll
    for (int dt = 0; dt < OTiles; ++dt) {
      o[dt][2 * r] *= correction;
      o[dt][2 * r + 1] *= correction;
    }
  }
}

// The end of the online softmax for this thread's rows: each row's sum over its four lanes, the
// row's log-sum-exp written to a.lse, and 1 / sum in `inv` for the output.
__device__ __forceinline__ void finish_rows(const ForwardArgs& a, const float (&row_max)[2], const float (&row_sum)[2],
                                            int my_row0, int g, int c, int h, int b, float (&inv)[2]) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float l = row_sum[r];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    inv[r] = 1.0f / l;
    const int row = my_row0 + g + 8 * r;
    if (c == 0 && row < a.seq) {
      a.lse[(static_cast<std::int64_t>(b) * a.heads + h) * a.seq + row] = row_max[r] * a.scale + logf(l);
    }
  }
}

template <int D, int Warps, int Keys>
constexpr int forward_shared_bytes() {
  return SwizzledTile<Warps * 16, D>::kBytes + 4 * SwizzledTile<Keys, D>::kBytes;
}

template <int D, int Warps, int Keys>
__global__ void __launch_bounds__(Warps * 32) forward_kernel(const ForwardArgs a) {
  wait_for_upstream_grids();
  constexpr int Br = Warps * 16, Bc = Keys, kThreads = Warps * 32;
  using QTile = SwizzledTile<Br, D>;
  using KTile = SwizzledTile<Bc, D>;
  extern __shared__ __align__(128) unsigned char shared[];
  const std::uint32_t q_tile = shared_address(shared);
  // Double-buffered key and value tiles: buffer i at k_tiles + i * KTile::kBytes.
  const std::uint32_t k_tiles = q_tile + QTile::kBytes, v_tiles = k_tiles + 2 * KTile::kBytes;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, c = lane % 4;

  const int q_blocks = (a.seq + Br - 1) / Br;
  const int q0 = (q_blocks - 1 - static_cast<int>(blockIdx.x)) * Br;  // the longest rows start first
  const int h = blockIdx.y, b = blockIdx.z, kvh = h / a.group;
  const std::int64_t token0 = static_cast<std::int64_t>(b) * a.seq;
  const bf16* q = a.q + token0 * a.qk_stride + h * D;
  const bf16* k = a.k + token0 * a.qk_stride + kvh * D;
  const bf16* v = a.v + token0 * a.v_stride + kvh * D;

  load_tile_async<Br, D, kThreads>(q_tile, q, a.qk_stride, q0, a.seq);
  copy_async_commit();
  const auto load_kv = [&](int j, int buf) {  // key block j into buffer buf
    load_tile_async<Bc, D, kThreads>(k_tiles + buf * KTile::kBytes, k, a.qk_stride, j * Bc, a.seq);
    load_tile_async<Bc, D, kThreads>(v_tiles + buf * KTile::kBytes, v, a.v_stride, j * Bc, a.seq);
  };
  load_kv(0, 0);
  copy_async_commit();
  // Keys up to the block's last row (causal), within the sequence.
  const int key_blocks = min((a.seq + Bc - 1) / Bc, (q0 + Br - 1) / Bc + 1);

  copy_async_wait<1>();
  __syncthreads();
  std::uint32_t qf[D / 16][4];
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) load_matrix_x4(qf[kk], a_fragment_address<QTile>(q_tile, warp * 16, kk, lane));

  float o[D / 8][4];
#pragma unroll
  for (int i = 0; i < D / 8; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
  float row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.0f, 0.0f};  // per thread: rows g, g + 8
  const int my_row0 = q0 + warp * 16;

  for (int j = 0; j < key_blocks; ++j) {
    const std::uint32_t k_tile = k_tiles + (j & 1) * KTile::kBytes, v_tile = v_tiles + (j & 1) * KTile::kBytes;
    prefetch_next_and_wait(j, key_blocks, load_kv);
    __syncthreads();

    const int key0 = j * Bc;
    if (key0 <= my_row0 + 15) {  // some key of the block is visible to some row of this warp
      float s[Bc / 8][4];
#pragma unroll
      for (int i = 0; i < Bc / 8; ++i) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.0f;
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
#pragma unroll
        for (int np = 0; np < Bc / 16; ++np) {
          std::uint32_t kf[4];
          load_matrix_x4(kf, b_fragment_address<KTile>(k_tile, np * 16, kk, lane));
          mma_bf16(s[2 * np], qf[kk], kf[0], kf[1]);
          mma_bf16(s[2 * np + 1], qf[kk], kf[2], kf[3]);
        }
      }
      online_softmax_step(s, o, key0, my_row0, g, c, a.scale_log2, row_max, row_sum);
#pragma unroll
      for (int kk = 0; kk < Bc / 16; ++kk) {
        std::uint32_t pf[4];
        c_to_a_fragment(pf, s[2 * kk], s[2 * kk + 1]);
#pragma unroll
        for (int np = 0; np < D / 16; ++np) {
          std::uint32_t vf[4];
          load_matrix_x4_transposed(vf, bt_fragment_address<KTile>(v_tile, kk * 16, np, lane));
          mma_bf16(o[2 * np], pf, vf[0], vf[1]);
          mma_bf16(o[2 * np + 1], pf, vf[2], vf[3]);
        }
      }
    }
    __syncthreads();  // the buffer is refilled by the next iteration's prefetch
  }

  // O / l through shared memory (the Q tile, no longer read), then 16-byte row stores.
  float inv[2];
  finish_rows(a, row_max, row_sum, my_row0, g, c, h, b, inv);
#pragma unroll
  for (int dt = 0; dt < D / 8; ++dt) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const std::uint32_t packed = pack_bf16(o[dt][2 * r] * inv[r], o[dt][2 * r + 1] * inv[r]);
      const std::uint32_t at = q_tile + QTile::offset(warp * 16 + g + 8 * r, dt) + 4 * c;
      asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(at), "r"(packed));
    }
  }
  __syncwarp();
  bf16* out = a.out + token0 * a.out_stride + h * D;
#pragma unroll
  for (int i = lane; i < 16 * QTile::kChunks; i += 32) {
    const int r = i / QTile::kChunks, chunk = i % QTile::kChunks, row = my_row0 + r;
    uint4 value;
    asm volatile("ld.shared.v4.b32 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(value.x), "=r"(value.y), "=r"(value.z), "=r"(value.w)
                 : "r"(q_tile + QTile::offset(warp * 16 + r, chunk)));
    if (row < a.seq) *reinterpret_cast<uint4*>(out + static_cast<std::int64_t>(row) * a.out_stride + chunk * 8) = value;
  }
}

}  // namespace quartet::cuda::flash

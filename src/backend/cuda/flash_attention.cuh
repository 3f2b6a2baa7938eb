// Flash attention (causal, grouped-query heads) on BF16 tensor cores: the kernels behind
// attention.cu. Scores and probabilities live only in registers, a block at a time, with the
// softmax's running maximum and sum in FP32 (online softmax), so memory grows linearly with the
// sequence; the forward pass saves only the log-sum-exp of each row.
//
// The backward pass is deterministic: no floating-point atomics. One kernel owns a block of keys
// and loops over every query (and every query head of its key/value head) to build dK and dV in
// registers; a second kernel owns a block of queries and loops over the keys to build dQ. This
// recomputes the scores and dP once more than the atomic-add formulation (7 instead of 5 matrix
// products per block pair), the price of having every output written once, by one block.
//
// Layouts (element strides given by the caller): q and k are the rotated heads of a BF16
// [tokens, (heads + kv_heads) * D] buffer (attention.cu's RoPE pass), v the v heads of the
// model's qkv tensor, out [tokens, heads * D]; lse and delta are FP32 [batch, heads, seq].
#pragma once

#include <cuda_bf16.h>

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
  float* dq;            // head 0 of dQ (rotated domain, FP32); row stride dqk_stride
  float* dk;            // kv head 0 of dK (rotated domain, FP32); row stride dqk_stride
  bf16* dv;             // kv head 0 of dV; row stride dv_stride
  int seq, heads, group;
  std::int64_t qk_stride, v_stride, out_stride, dqk_stride, dv_stride;
  float scale, scale_log2;
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

// ---- forward: a block of 128 queries (8 warps x 16 rows), keys 64 at a time ----------------

inline constexpr int kForwardWarps = 8, kForwardRows = 128, kForwardKeys = 64;

template <int D>
constexpr int forward_shared_bytes() {
  return SwizzledTile<kForwardRows, D>::kBytes + 4 * SwizzledTile<kForwardKeys, D>::kBytes;
}

template <int D>
__global__ void __launch_bounds__(kForwardWarps * 32) forward_kernel(const ForwardArgs a) {
  constexpr int Br = kForwardRows, Bc = kForwardKeys, kThreads = kForwardWarps * 32;
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
  load_tile_async<Bc, D, kThreads>(k_tiles, k, a.qk_stride, 0, a.seq);
  load_tile_async<Bc, D, kThreads>(v_tiles, v, a.v_stride, 0, a.seq);
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
    if (j + 1 < key_blocks) {
      const std::uint32_t next = ((j + 1) & 1) * KTile::kBytes;
      load_tile_async<Bc, D, kThreads>(k_tiles + next, k, a.qk_stride, (j + 1) * Bc, a.seq);
      load_tile_async<Bc, D, kThreads>(v_tiles + next, v, a.v_stride, (j + 1) * Bc, a.seq);
      copy_async_commit();
      copy_async_wait<1>();
    } else {
      copy_async_wait<0>();
    }
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
      if (key0 + Bc - 1 > my_row0) {  // the diagonal crosses this warp's rows: mask keys after the query
#pragma unroll
        for (int nt = 0; nt < Bc / 8; ++nt) {
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
        for (int nt = 0; nt < Bc / 8; ++nt) mx = fmaxf(mx, fmaxf(s[nt][2 * r], s[nt][2 * r + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float base = mx == -INFINITY ? 0.0f : mx * a.scale_log2;
        const float correction = exp2f(row_max[r] * a.scale_log2 - base);
        row_max[r] = mx;
        float sum = 0.0f;
#pragma unroll
        for (int nt = 0; nt < Bc / 8; ++nt) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const float p = exp2f(fmaf(s[nt][2 * r + e], a.scale_log2, -base));
            s[nt][2 * r + e] = p;
            sum += p;
          }
        }
        row_sum[r] = row_sum[r] * correction + sum;  // this thread's columns; summed over lanes at the end
#pragma unroll
        for (int dt = 0; dt < D / 8; ++dt) {
          o[dt][2 * r] *= correction;
          o[dt][2 * r + 1] *= correction;
        }
      }
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

// ---- backward, dK and dV: a block of 64 keys (4 warps x 16 keys), queries Br at a time -----

inline constexpr int kKeyWarps = 4, kKeyRows = 64;
template <int D>
constexpr int key_query_rows() {
  return D > 64 ? 32 : 64;  // the two FP32 accumulators of D columns leave this much register room
}

template <int D>
constexpr int key_shared_bytes() {
  constexpr int Br = key_query_rows<D>();
  return 2 * SwizzledTile<kKeyRows, D>::kBytes + 4 * SwizzledTile<Br, D>::kBytes + 4 * Br * 4;
}

template <int D>
__global__ void __launch_bounds__(kKeyWarps * 32) key_gradient_kernel(const BackwardArgs a) {
  constexpr int Bc = kKeyRows, Br = key_query_rows<D>(), kThreads = kKeyWarps * 32;
  using KTile = SwizzledTile<Bc, D>;
  using QTile = SwizzledTile<Br, D>;
  extern __shared__ __align__(128) unsigned char shared[];
  const std::uint32_t k_tile = shared_address(shared), v_tile = k_tile + KTile::kBytes;
  const std::uint32_t q_tiles = v_tile + KTile::kBytes, do_tiles = q_tiles + 2 * QTile::kBytes;
  float* row_stats = reinterpret_cast<float*>(shared + 2 * KTile::kBytes + 4 * QTile::kBytes);  // [2][lse | delta][Br]
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, c = lane % 4;

  const int key0 = static_cast<int>(blockIdx.x) * Bc;  // the first key blocks see the most queries and start first
  const int kvh = blockIdx.y, b = blockIdx.z;
  const std::int64_t token0 = static_cast<std::int64_t>(b) * a.seq;
  load_tile_async<Bc, D, kThreads>(k_tile, a.k + token0 * a.qk_stride + kvh * D, a.qk_stride, key0, a.seq);
  load_tile_async<Bc, D, kThreads>(v_tile, a.v + token0 * a.v_stride + kvh * D, a.v_stride, key0, a.seq);
  copy_async_commit();

  // Work items: (query head of the group, query block) with query blocks from the diagonal on.
  const int first_q_block = key0 / Br, q_blocks = (a.seq + Br - 1) / Br;
  const int per_head = q_blocks - first_q_block, items = a.group * per_head;
  const auto load_item = [&](int item, int buf) {
    const int h = kvh * a.group + item / per_head, q0 = (first_q_block + item % per_head) * Br;
    load_tile_async<Br, D, kThreads>(q_tiles + buf * QTile::kBytes, a.q + token0 * a.qk_stride + h * D, a.qk_stride, q0, a.seq);
    load_tile_async<Br, D, kThreads>(do_tiles + buf * QTile::kBytes, a.dout + token0 * a.out_stride + h * D, a.out_stride, q0, a.seq);
    const std::int64_t stats = (static_cast<std::int64_t>(b) * a.heads + h) * a.seq;
    for (int i = threadIdx.x; i < Br; i += kThreads) {
      const bool valid = q0 + i < a.seq;  // a padding query's probabilities are exp2(-inf) = 0
      row_stats[(buf * 2 + 0) * Br + i] = valid ? a.lse[stats + q0 + i] * 1.4426950408889634f : INFINITY;
      row_stats[(buf * 2 + 1) * Br + i] = valid ? a.delta[stats + q0 + i] : 0.0f;
    }
  };
  load_item(0, 0);
  copy_async_commit();

  float dk[D / 8][4], dv[D / 8][4];
#pragma unroll
  for (int i = 0; i < D / 8; ++i) {
    dk[i][0] = dk[i][1] = dk[i][2] = dk[i][3] = 0.0f;
    dv[i][0] = dv[i][1] = dv[i][2] = dv[i][3] = 0.0f;
  }
  const int my_key0 = key0 + warp * 16;

  for (int item = 0; item < items; ++item) {
    const int buf = item & 1;
    if (item + 1 < items) {
      load_item(item + 1, buf ^ 1);
      copy_async_commit();
      copy_async_wait<1>();
    } else {
      copy_async_wait<0>();
    }
    __syncthreads();
    const int q0 = (first_q_block + item % per_head) * Br;
    const std::uint32_t q_tile = q_tiles + buf * QTile::kBytes, do_tile = do_tiles + buf * QTile::kBytes;
    const float* lse_log2 = row_stats + (buf * 2 + 0) * Br;
    const float* delta = row_stats + (buf * 2 + 1) * Br;

    if (q0 + Br - 1 >= my_key0) {  // some query of the block sees some key of this warp
      // S^T = K Q^T and dP^T = V dO^T, this warp's 16 keys x Br queries.
      float s[Br / 8][4], dp[Br / 8][4];
#pragma unroll
      for (int i = 0; i < Br / 8; ++i) {
        s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.0f;
        dp[i][0] = dp[i][1] = dp[i][2] = dp[i][3] = 0.0f;
      }
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        std::uint32_t kf[4], vf[4];
        load_matrix_x4(kf, a_fragment_address<KTile>(k_tile, warp * 16, kk, lane));
        load_matrix_x4(vf, a_fragment_address<KTile>(v_tile, warp * 16, kk, lane));
#pragma unroll
        for (int np = 0; np < Br / 16; ++np) {
          std::uint32_t qf[4], dof[4];
          load_matrix_x4(qf, b_fragment_address<QTile>(q_tile, np * 16, kk, lane));
          mma_bf16(s[2 * np], kf, qf[0], qf[1]);
          mma_bf16(s[2 * np + 1], kf, qf[2], qf[3]);
          load_matrix_x4(dof, b_fragment_address<QTile>(do_tile, np * 16, kk, lane));
          mma_bf16(dp[2 * np], vf, dof[0], dof[1]);
          mma_bf16(dp[2 * np + 1], vf, dof[2], dof[3]);
        }
      }
      // P^T = exp(S^T scale - lse[query]), zero where the query precedes the key;
      // dS^T = P^T (dP^T - delta[query]).
#pragma unroll
      for (int nt = 0; nt < Br / 8; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int qi = nt * 8 + 2 * c + (e & 1), query = q0 + qi, key = my_key0 + g + (e >> 1) * 8;
          const float p = query >= key ? exp2f(fmaf(s[nt][e], a.scale_log2, -lse_log2[qi])) : 0.0f;
          s[nt][e] = p;
          dp[nt][e] = p * (dp[nt][e] - delta[qi]);
        }
      }
      // dV += P^T dO, dK += dS^T Q (the scale is applied at the end).
#pragma unroll
      for (int kk = 0; kk < Br / 16; ++kk) {
        std::uint32_t pf[4], dsf[4];
        c_to_a_fragment(pf, s[2 * kk], s[2 * kk + 1]);
        c_to_a_fragment(dsf, dp[2 * kk], dp[2 * kk + 1]);
#pragma unroll
        for (int np = 0; np < D / 16; ++np) {
          std::uint32_t of[4], qf[4];
          load_matrix_x4_transposed(of, bt_fragment_address<QTile>(do_tile, kk * 16, np, lane));
          mma_bf16(dv[2 * np], pf, of[0], of[1]);
          mma_bf16(dv[2 * np + 1], pf, of[2], of[3]);
          load_matrix_x4_transposed(qf, bt_fragment_address<QTile>(q_tile, kk * 16, np, lane));
          mma_bf16(dk[2 * np], dsf, qf[0], qf[1]);
          mma_bf16(dk[2 * np + 1], dsf, qf[2], qf[3]);
        }
      }
    }
    __syncthreads();
  }

  // Each thread owns keys g, g + 8 of its warp and columns 8 dt + 2c, 2c + 1.
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int key = my_key0 + g + 8 * r;
    if (key >= a.seq) continue;
    float* dk_row = a.dk + (token0 + key) * a.dqk_stride + kvh * D;
    bf16* dv_row = a.dv + (token0 + key) * a.dv_stride + kvh * D;
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt) {
      *reinterpret_cast<float2*>(dk_row + dt * 8 + 2 * c) = make_float2(dk[dt][2 * r] * a.scale, dk[dt][2 * r + 1] * a.scale);
      *reinterpret_cast<std::uint32_t*>(dv_row + dt * 8 + 2 * c) = pack_bf16(dv[dt][2 * r], dv[dt][2 * r + 1]);
    }
  }
}

// ---- backward, dQ: a block of 64 queries (4 warps x 16 rows), keys 64 at a time -----------

inline constexpr int kQueryWarps = 4, kQueryRows = 64, kQueryKeys = 64;

template <int D>
constexpr int query_shared_bytes() {
  return 2 * SwizzledTile<kQueryRows, D>::kBytes + 4 * SwizzledTile<kQueryKeys, D>::kBytes;
}

template <int D>
__global__ void __launch_bounds__(kQueryWarps * 32) query_gradient_kernel(const BackwardArgs a) {
  constexpr int Br = kQueryRows, Bc = kQueryKeys, kThreads = kQueryWarps * 32;
  using QTile = SwizzledTile<Br, D>;
  using KTile = SwizzledTile<Bc, D>;
  extern __shared__ __align__(128) unsigned char shared[];
  const std::uint32_t q_tile = shared_address(shared), do_tile = q_tile + QTile::kBytes;
  const std::uint32_t k_tiles = do_tile + QTile::kBytes, v_tiles = k_tiles + 2 * KTile::kBytes;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, c = lane % 4;

  const int q_blocks = (a.seq + Br - 1) / Br;
  const int q0 = (q_blocks - 1 - static_cast<int>(blockIdx.x)) * Br;
  const int h = blockIdx.y, b = blockIdx.z, kvh = h / a.group;
  const std::int64_t token0 = static_cast<std::int64_t>(b) * a.seq;
  const bf16* k = a.k + token0 * a.qk_stride + kvh * D;
  const bf16* v = a.v + token0 * a.v_stride + kvh * D;
  load_tile_async<Br, D, kThreads>(q_tile, a.q + token0 * a.qk_stride + h * D, a.qk_stride, q0, a.seq);
  load_tile_async<Br, D, kThreads>(do_tile, a.dout + token0 * a.out_stride + h * D, a.out_stride, q0, a.seq);
  copy_async_commit();
  load_tile_async<Bc, D, kThreads>(k_tiles, k, a.qk_stride, 0, a.seq);
  load_tile_async<Bc, D, kThreads>(v_tiles, v, a.v_stride, 0, a.seq);
  copy_async_commit();
  const int key_blocks = min((a.seq + Bc - 1) / Bc, (q0 + Br - 1) / Bc + 1);

  const int my_row0 = q0 + warp * 16;
  float lse_log2[2], delta[2];
  const std::int64_t stats = (static_cast<std::int64_t>(b) * a.heads + h) * a.seq;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = my_row0 + g + 8 * r;
    lse_log2[r] = row < a.seq ? a.lse[stats + row] * 1.4426950408889634f : INFINITY;
    delta[r] = row < a.seq ? a.delta[stats + row] : 0.0f;
  }
  float dq[D / 8][4];
#pragma unroll
  for (int i = 0; i < D / 8; ++i) dq[i][0] = dq[i][1] = dq[i][2] = dq[i][3] = 0.0f;

  for (int j = 0; j < key_blocks; ++j) {
    const std::uint32_t k_tile = k_tiles + (j & 1) * KTile::kBytes, v_tile = v_tiles + (j & 1) * KTile::kBytes;
    if (j + 1 < key_blocks) {
      const std::uint32_t next = ((j + 1) & 1) * KTile::kBytes;
      load_tile_async<Bc, D, kThreads>(k_tiles + next, k, a.qk_stride, (j + 1) * Bc, a.seq);
      load_tile_async<Bc, D, kThreads>(v_tiles + next, v, a.v_stride, (j + 1) * Bc, a.seq);
      copy_async_commit();
      copy_async_wait<1>();
    } else {
      copy_async_wait<0>();
    }
    __syncthreads();
    const int key0 = j * Bc;
    if (key0 <= my_row0 + 15) {
      float s[Bc / 8][4], dp[Bc / 8][4];
#pragma unroll
      for (int i = 0; i < Bc / 8; ++i) {
        s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.0f;
        dp[i][0] = dp[i][1] = dp[i][2] = dp[i][3] = 0.0f;
      }
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        std::uint32_t qf[4], dof[4];
        load_matrix_x4(qf, a_fragment_address<QTile>(q_tile, warp * 16, kk, lane));
        load_matrix_x4(dof, a_fragment_address<QTile>(do_tile, warp * 16, kk, lane));
#pragma unroll
        for (int np = 0; np < Bc / 16; ++np) {
          std::uint32_t kf[4], vf[4];
          load_matrix_x4(kf, b_fragment_address<KTile>(k_tile, np * 16, kk, lane));
          mma_bf16(s[2 * np], qf, kf[0], kf[1]);
          mma_bf16(s[2 * np + 1], qf, kf[2], kf[3]);
          load_matrix_x4(vf, b_fragment_address<KTile>(v_tile, np * 16, kk, lane));
          mma_bf16(dp[2 * np], dof, vf[0], vf[1]);
          mma_bf16(dp[2 * np + 1], dof, vf[2], vf[3]);
        }
      }
#pragma unroll
      for (int nt = 0; nt < Bc / 8; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int r = e >> 1, key = key0 + nt * 8 + 2 * c + (e & 1), row = my_row0 + g + 8 * r;
          const float p = key <= row ? exp2f(fmaf(s[nt][e], a.scale_log2, -lse_log2[r])) : 0.0f;
          dp[nt][e] = p * (dp[nt][e] - delta[r]);
        }
      }
      // dQ += dS K.
#pragma unroll
      for (int kk = 0; kk < Bc / 16; ++kk) {
        std::uint32_t dsf[4];
        c_to_a_fragment(dsf, dp[2 * kk], dp[2 * kk + 1]);
#pragma unroll
        for (int np = 0; np < D / 16; ++np) {
          std::uint32_t kf[4];
          load_matrix_x4_transposed(kf, bt_fragment_address<KTile>(k_tile, kk * 16, np, lane));
          mma_bf16(dq[2 * np], dsf, kf[0], kf[1]);
          mma_bf16(dq[2 * np + 1], dsf, kf[2], kf[3]);
        }
      }
    }
    __syncthreads();
  }

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = my_row0 + g + 8 * r;
    if (row >= a.seq) continue;
    float* dq_row = a.dq + (token0 + row) * a.dqk_stride + h * D;
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt) {
      *reinterpret_cast<float2*>(dq_row + dt * 8 + 2 * c) = make_float2(dq[dt][2 * r] * a.scale, dq[dt][2 * r + 1] * a.scale);
    }
  }
}

}  // namespace quartet::cuda::flash

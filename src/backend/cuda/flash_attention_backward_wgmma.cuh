// The split backward of flash attention (flash_attention_backward.cuh) on Hopper's warpgroup
// products (wgmma, sm_90a), head dims 64 and 128: the same two kernels and the same seven products per
// block pair, with each warpgroup of four warps issuing its products as asynchronous chains that
// read Q, K, V and dO straight from shared memory (WgmmaTile, 128-byte swizzle) and P and dS
// from registers. Deterministic like the mma.sync kernels: every sum has a fixed order.
//
// - dK and dV: a block of 128 keys, 64 per warpgroup, walks the query blocks (64 queries) from
//   the diagonal on, for every query head of its key/value head:
//   S^T = K Q^T and dP^T = V dO^T (m64n64, both operands from shared memory), P^T and dS^T in
//   registers, then dV += P^T dO and dK += dS^T Q (m64nD, P^T and dS^T as A fragments, dO and
//   Q read transposed by the descriptor, as the forward reads V).
// - dQ: a block of 128 queries, 64 per warpgroup, walks the key blocks (64 keys) up to the
//   diagonal: S = Q K^T, dP = dO V^T, dS in registers, dQ += dS K.
//
// The accumulators have mma.sync's fragment layout, so the masking, the probabilities and the
// epilogues (RoPE's transpose for dQ and dK) are the mma.sync kernels' code.
#pragma once

#include "backend/cuda/flash_attention_backward.cuh"
#include "backend/cuda/flash_attention_wgmma.cuh"
#include "backend/cuda/wgmma.cuh"

namespace quartet::cuda::flash {

inline constexpr int kWgmmaBackwardGroups = 2, kWgmmaBackwardThreads = 128 * kWgmmaBackwardGroups;
// dK and dV: keys per block (64 per warpgroup) and queries per step.
inline constexpr int kWgmmaKeyBlock = 64 * kWgmmaBackwardGroups, kWgmmaKeyStepQueries = 64;
// dQ: queries per block (64 per warpgroup) and keys per step.
inline constexpr int kWgmmaQueryBlock = 64 * kWgmmaBackwardGroups, kWgmmaQueryStepKeys = 64;

template <int D>
constexpr int key_gradient_wgmma_shared_bytes() {
  // K and V, double-buffered Q and dO, double-buffered lse and delta, and room to align to 1024.
  return 2 * WgmmaTile<kWgmmaKeyBlock, D>::kBytes + 4 * WgmmaTile<kWgmmaKeyStepQueries, D>::kBytes +
         4 * kWgmmaKeyStepQueries * 4 + 1024;
}

template <int D>
constexpr int query_gradient_wgmma_shared_bytes() {
  // Q and dO, double-buffered K and V, and room to align to 1024.
  return 2 * WgmmaTile<kWgmmaQueryBlock, D>::kBytes + 4 * WgmmaTile<kWgmmaQueryStepKeys, D>::kBytes + 1024;
}

// One chain of D / 16 k16 steps over the head dim: d = A B^T with A rows [a_row0, a_row0 + 64) of
// tile `a` and B the 64 rows of tile `b`, both [rows][D] WgmmaTiles (K-major).
template <int D, int ARows, int BRows>
__device__ __forceinline__ void wgmma_scores(float (&d)[8][4], std::uint32_t a, int a_row0, std::uint32_t b) {
  static_assert(BRows == 64, "an m64n64 product");
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    const std::uint32_t column = (kk & 3) * 32;  // 16 columns of a 64-column half
    const std::uint64_t ad =
        swizzle128_descriptor(a + (kk >> 2) * WgmmaTile<ARows, D>::kHalfBytes + a_row0 * 128 + column, 16, 1024);
    const std::uint64_t bd = swizzle128_descriptor(b + (kk >> 2) * WgmmaTile<BRows, D>::kHalfBytes + column, 16, 1024);
    wgmma_m64n64k16_ss(d, ad, bd, kk > 0 ? 1 : 0);
  }
}

// Two score chains of one warpgroup, issued together and waited for: s = A_s B_s^T and
// dp = A_dp B_dp^T (wgmma_scores), A rows [a_row0, a_row0 + 64).
template <int D, int ARows, int BRows>
__device__ __forceinline__ void wgmma_score_pair(float (&s)[8][4], float (&dp)[8][4], std::uint32_t a_s, std::uint32_t a_dp,
                                                 int a_row0, std::uint32_t b_s, std::uint32_t b_dp) {
#pragma unroll
  for (int i = 0; i < 8; ++i) {  // overwritten by the first product; set so that no code reads them unset
    s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.0f;
    dp[i][0] = dp[i][1] = dp[i][2] = dp[i][3] = 0.0f;
  }
  fence_accumulator(s);
  fence_accumulator(dp);
  wgmma_fence();
  wgmma_scores<D, ARows, BRows>(s, a_s, a_row0, b_s);
  wgmma_scores<D, ARows, BRows>(dp, a_dp, a_row0, b_dp);
  wgmma_commit();
  wgmma_wait_all();
  fence_accumulator(s);
  fence_accumulator(dp);
}

// d += A B over 64 k-rows: A as four register fragments (k16 steps), B a [64][D] WgmmaTile read
// transposed (MN-major: its 64-column halves a half tile apart, 8-row groups 1024 bytes apart).
template <int D>
__device__ __forceinline__ void wgmma_accumulate_64(float (&d)[D / 8][4], const std::uint32_t (&a)[4][4], std::uint32_t b) {
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) {
    const std::uint64_t bd = swizzle128_descriptor(b + kk * 16 * 128, WgmmaTile<64, D>::kHalfBytes, 1024);
    if constexpr (D == 128) {
      wgmma_m64n128k16_rs(d, a[kk], bd);
    } else {
      wgmma_m64n64k16_rs<0>(d, a[kk], bd);
    }
  }
}

// One block per SM at either head dim: bounded to two at head dim 64 (128 registers), the kernel
// spills (docs/results/ptxas-attention-key-wgmma-two-blocks-sm90a.txt; 172 registers unbounded).
template <int D>
__global__ void __launch_bounds__(kWgmmaBackwardThreads, 1) key_gradient_wgmma_kernel(const BackwardArgs a) {
  wait_for_upstream_grids();
  constexpr int Bc = kWgmmaKeyBlock, Br = kWgmmaKeyStepQueries, kThreads = kWgmmaBackwardThreads;
  using KTile = WgmmaTile<Bc, D>;
  using QTile = WgmmaTile<Br, D>;
  extern __shared__ __align__(1024) unsigned char shared[];
  const std::uint32_t k_tile = shared_address_aligned_1024(shared), v_tile = k_tile + KTile::kBytes;
  const std::uint32_t q_tiles = v_tile + KTile::kBytes, do_tiles = q_tiles + 2 * QTile::kBytes;
  float* row_stats = reinterpret_cast<float*>(shared + (do_tiles + 2 * QTile::kBytes - shared_address(shared)));
  const int group = threadIdx.x / 128, warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, c = lane % 4;

  const int key_block = static_cast<int>(blockIdx.x), kvh = static_cast<int>(blockIdx.y), b = static_cast<int>(blockIdx.z);
  const int key0 = key_block * Bc;
  const std::int64_t token0 = static_cast<std::int64_t>(b) * a.seq;
  load_wgmma_tile_async<Bc, kThreads, D>(k_tile, a.k + token0 * a.qk_stride + kvh * D, a.qk_stride, key0, a.seq);
  load_wgmma_tile_async<Bc, kThreads, D>(v_tile, a.v + token0 * a.v_stride + kvh * D, a.v_stride, key0, a.seq);
  copy_async_commit();

  // Work items: (query head of the group, query block) with query blocks from the diagonal on.
  const int first_q_block = key0 / Br, q_blocks = (a.seq + Br - 1) / Br;
  const int per_head = q_blocks - first_q_block, items = a.group * per_head;
  const auto load_item = [&](int item, int buf) {
    const int h = kvh * a.group + item / per_head, q0 = (first_q_block + item % per_head) * Br;
    load_wgmma_tile_async<Br, kThreads, D>(q_tiles + buf * QTile::kBytes, a.q + token0 * a.qk_stride + h * D, a.qk_stride,
                                           q0, a.seq);
    load_wgmma_tile_async<Br, kThreads, D>(do_tiles + buf * QTile::kBytes, a.dout + token0 * a.out_stride + h * D,
                                           a.out_stride, q0, a.seq);
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
  const int group_key0 = key0 + group * 64, my_key0 = group_key0 + (warp % 4) * 16;

  for (int item = 0; item < items; ++item) {
    const int buf = item & 1;
    prefetch_next_and_wait(item, items, load_item);
    fence_async_shared();
    __syncthreads();
    const int q0 = (first_q_block + item % per_head) * Br;
    const std::uint32_t q_tile = q_tiles + buf * QTile::kBytes, do_tile = do_tiles + buf * QTile::kBytes;
    const float* lse_log2 = row_stats + (buf * 2 + 0) * Br;
    const float* delta = row_stats + (buf * 2 + 1) * Br;

    if (q0 + Br - 1 >= group_key0) {  // some query of the block sees some key of this warpgroup
      // S^T = K Q^T and dP^T = V dO^T, this warpgroup's 64 keys x Br queries.
      float s[8][4], dp[8][4];
      wgmma_score_pair<D, Bc, Br>(s, dp, k_tile, v_tile, group * 64, q_tile, do_tile);
      key_major_probabilities(s, dp, q0, my_key0, g, c, a.scale_log2, lse_log2, delta);
      // dV += P^T dO, dK += dS^T Q (the scale is applied at the end). Every A fragment is made
      // before the first product reads any (a register written between the products of a
      // chain makes ptxas serialize them).
      std::uint32_t pf[4][4], dsf[4][4];
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) {
        c_to_a_fragment(pf[kk], s[2 * kk], s[2 * kk + 1]);
        c_to_a_fragment(dsf[kk], dp[2 * kk], dp[2 * kk + 1]);
      }
      fence_accumulator(dv);
      fence_accumulator(dk);
      wgmma_fence();
      wgmma_accumulate_64<D>(dv, pf, do_tile);
      wgmma_accumulate_64<D>(dk, dsf, q_tile);
      wgmma_commit();
      wgmma_wait_all();
      fence_accumulator(dv);
      fence_accumulator(dk);
    }
    __syncthreads();  // the tiles of this item are refilled by the next prefetch
  }

  // Each thread owns keys g, g + 8 of its warp's 16 and columns 8 dt + 2c, 2c + 1.
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int key = my_key0 + g + 8 * r;
    if (key >= a.seq) continue;
    bf16* dv_row = a.dv + (token0 + key) * a.dv_stride + kvh * D;
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt) {
      *reinterpret_cast<std::uint32_t*>(dv_row + dt * 8 + 2 * c) = pack_bf16(dv[dt][2 * r], dv[dt][2 * r + 1]);
    }
    store_unrotated_gradient_row<D>(a.dk_unrotated + (token0 + key) * a.dv_stride + kvh * D, dk, r, c, a, key);
  }
}

// At head dim 64 two blocks an SM (bounded to 128 registers, without spills).
template <int D>
__global__ void __launch_bounds__(kWgmmaBackwardThreads, D == 64 ? 2 : 1) query_gradient_wgmma_kernel(const BackwardArgs a) {
  wait_for_upstream_grids();
  constexpr int Br = kWgmmaQueryBlock, Bc = kWgmmaQueryStepKeys, kThreads = kWgmmaBackwardThreads;
  using QTile = WgmmaTile<Br, D>;
  using KTile = WgmmaTile<Bc, D>;
  extern __shared__ __align__(1024) unsigned char shared[];
  const std::uint32_t q_tile = shared_address_aligned_1024(shared), do_tile = q_tile + QTile::kBytes;
  const std::uint32_t k_tiles = do_tile + QTile::kBytes, v_tiles = k_tiles + 2 * KTile::kBytes;
  const int group = threadIdx.x / 128, warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, c = lane % 4;

  const int q_blocks = (a.seq + Br - 1) / Br;
  const int q0 = (q_blocks - 1 - static_cast<int>(blockIdx.x)) * Br;  // the longest rows start first
  const int h = blockIdx.y, b = blockIdx.z, kvh = h / a.group;
  const std::int64_t token0 = static_cast<std::int64_t>(b) * a.seq;
  const bf16* k = a.k + token0 * a.qk_stride + kvh * D;
  const bf16* v = a.v + token0 * a.v_stride + kvh * D;
  load_wgmma_tile_async<Br, kThreads, D>(q_tile, a.q + token0 * a.qk_stride + h * D, a.qk_stride, q0, a.seq);
  load_wgmma_tile_async<Br, kThreads, D>(do_tile, a.dout + token0 * a.out_stride + h * D, a.out_stride, q0, a.seq);
  copy_async_commit();
  const auto load_kv = [&](int j, int buf) {  // key block j into buffer buf
    load_wgmma_tile_async<Bc, kThreads, D>(k_tiles + buf * KTile::kBytes, k, a.qk_stride, j * Bc, a.seq);
    load_wgmma_tile_async<Bc, kThreads, D>(v_tiles + buf * KTile::kBytes, v, a.v_stride, j * Bc, a.seq);
  };
  load_kv(0, 0);
  copy_async_commit();
  const int key_blocks = min((a.seq + Bc - 1) / Bc, (q0 + Br - 1) / Bc + 1);

  const int group_row0 = q0 + group * 64, my_row0 = group_row0 + (warp % 4) * 16;
  float lse_log2[2], delta[2];
  query_row_stats(a, b, h, my_row0, g, lse_log2, delta);
  float dq[D / 8][4];
#pragma unroll
  for (int i = 0; i < D / 8; ++i) dq[i][0] = dq[i][1] = dq[i][2] = dq[i][3] = 0.0f;

  for (int j = 0; j < key_blocks; ++j) {
    const std::uint32_t k_tile = k_tiles + (j & 1) * KTile::kBytes, v_tile = v_tiles + (j & 1) * KTile::kBytes;
    prefetch_next_and_wait(j, key_blocks, load_kv);
    fence_async_shared();
    __syncthreads();
    const int key0 = j * Bc;
    if (key0 <= group_row0 + 63) {  // some key of the block is visible to some row of this warpgroup
      // S = Q K^T and dP = dO V^T, this warpgroup's 64 queries x Bc keys.
      float s[8][4], dp[8][4];
      wgmma_score_pair<D, Br, Bc>(s, dp, q_tile, do_tile, group * 64, k_tile, v_tile);
      query_major_gradient(s, dp, key0, my_row0, g, c, a.scale_log2, lse_log2, delta);
      // dQ += dS K: dS as A fragments, K read transposed.
      std::uint32_t dsf[4][4];
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) c_to_a_fragment(dsf[kk], dp[2 * kk], dp[2 * kk + 1]);
      fence_accumulator(dq);
      wgmma_fence();
      wgmma_accumulate_64<D>(dq, dsf, k_tile);
      wgmma_commit();
      wgmma_wait_all();
      fence_accumulator(dq);
    }
    __syncthreads();  // the buffer is refilled by the next iteration's prefetch
  }

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = my_row0 + g + 8 * r;
    if (row >= a.seq) continue;
    store_unrotated_gradient_row<D>(a.dq_unrotated + (token0 + row) * a.dv_stride + h * D, dq, r, c, a, row);
  }
}

}  // namespace quartet::cuda::flash

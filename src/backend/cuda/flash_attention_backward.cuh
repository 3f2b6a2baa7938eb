// The backward pass of flash attention (flash_attention.cuh): deterministic, with no
// floating-point atomics.
//
// The work is split by blocks of 64 keys: each walks every query block from the diagonal on (and
// every query head of its key/value head, so grouped-query heads need no reduction) and builds
// dK and dV in registers. dQ = dS K needs the contributions of every key block to a query block:
//
// - split (the default): a second kernel per block of 64 queries recomputes the scores and dP to
//   build dQ in registers: seven matrix products per block pair, no ordering.
// - fused (QUARTET_ATTENTION_BACKWARD=fused): the key-block kernel also computes each query
//   block's dQ contribution (dS through shared memory) and adds it to an FP32 dQ in global
//   memory in a fixed order, the diagonal key block first and key block 0 last: five products
//   per block pair. A per-(batch, head, query block) counter orders the additions
//   (acquire/release, as FlashAttention-3's deterministic mode does). Key blocks take their
//   tasks from a counter in the order the additions need (the lighter, later key blocks of a
//   head first), so a block only ever waits for a task handed out before its own; the sum so
//   far is staged in shared memory by cp.async while the dV and dK products run, and each
//   count is released one item later, when the stores have drained. Its products alone run
//   faster than the split kernels, but the FP32 read-modify-write of dQ through L2 still costs
//   more than the two recomputed products at seq 2048 (docs/cuda.md).
#pragma once

#include "backend/cuda/flash_attention.cuh"
#include "backend/cuda/dependent_launch.cuh"
#include "quartet/numerics/host_device.h"

namespace quartet::cuda::flash {

inline constexpr int kKeyWarps = 4, kKeyRows = 64;
template <int D>
constexpr int key_query_rows() {
  return D > 64 ? 32 : 64;  // the two FP32 accumulators of D columns leave this much register room
}

// dS^T of a block ([64 keys][Br queries] BF16) for the fused kernel's dQ product: rows padded by
// 16 bytes, so that both the fragment stores and the eight rows of an ldmatrix fall in distinct
// banks.
template <int D>
constexpr int ds_row_bytes() {
  return key_query_rows<D>() * 2 + 16;
}

template <int D>
constexpr int key_shared_bytes() {
  constexpr int Br = key_query_rows<D>();
  return 2 * SwizzledTile<kKeyRows, D>::kBytes + 4 * SwizzledTile<Br, D>::kBytes + 4 * Br * 4;
}

// The fused kernel's FP32 staging of a query block's dQ sum so far ([Br][D], rows padded by 16
// bytes against bank conflicts).
template <int D>
constexpr int staging_row_bytes() {
  return D * 4 + 16;
}

template <int D>
constexpr int fused_shared_bytes() {
  // + dS^T, the staged sum, and the task number's slot
  return key_shared_bytes<D>() + kKeyRows * ds_row_bytes<D>() + key_query_rows<D>() * staging_row_bytes<D>() + 16;
}

__device__ __forceinline__ int load_acquire(const int* p) {
  int v;
  asm volatile("ld.acquire.gpu.global.b32 %0, [%1];\n" : "=r"(v) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ void store_release(int* p, int v) {
  asm volatile("st.release.gpu.global.b32 [%0], %1;\n" ::"l"(p), "r"(v) : "memory");
}

// The A fragment of rows m0..m0+15 (k-chunk kk) of a matrix stored transposed, [k][m], with
// `row_bytes` per stored row and no swizzle (ldmatrix.trans: stored rows are the k index).
__device__ __forceinline__ std::uint32_t at_fragment_address(std::uint32_t tile, int row_bytes, int m0, int kk, int lane) {
  return tile + (kk * 16 + (lane & 7) + ((lane >> 4) << 3)) * row_bytes + (m0 + ((lane >> 3) & 1) * 8) * 2;
}

// P^T and dS^T of a key-major block (rows: this thread's keys my_key0 + g and + 8; columns: the
// queries q0 + 8 nt + 2c (+1), whose log2-domain log-sum-exp and delta are lse_log2[] and delta[]
// by their index in the block): s becomes P^T = exp(S^T scale - lse), zero where the query precedes
// the key, and dp becomes dS^T = P^T (dP^T - delta).
template <int NTiles>
__device__ __forceinline__ void key_major_probabilities(float (&s)[NTiles][4], float (&dp)[NTiles][4], int q0, int my_key0,
                                                        int g, int c, float scale_log2, const float* lse_log2,
                                                        const float* delta) {
#pragma unroll
  for (int nt = 0; nt < NTiles; ++nt) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int qi = nt * 8 + 2 * c + (e & 1), query = q0 + qi, key = my_key0 + g + (e >> 1) * 8;
      const float p = query >= key ? exp2f(fmaf(s[nt][e], scale_log2, -lse_log2[qi])) : 0.0f;
      s[nt][e] = p;
      dp[nt][e] = p * (dp[nt][e] - delta[qi]);
    }
  }
}

// dS of a query-major block (rows: this thread's queries my_row0 + g and + 8, with their
// log2-domain log-sum-exp and delta; columns: the keys key0 + 8 nt + 2c (+1)): dp becomes
// dS = P (dP - delta), P = exp(S scale - lse), zero where the key follows the query.
template <int NTiles>
__device__ __forceinline__ void query_major_gradient(const float (&s)[NTiles][4], float (&dp)[NTiles][4], int key0,
                                                     int my_row0, int g, int c, float scale_log2,
                                                     const float (&lse_log2)[2], const float (&delta)[2]) {
#pragma unroll
  for (int nt = 0; nt < NTiles; ++nt) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int r = e >> 1, key = key0 + nt * 8 + 2 * c + (e & 1), row = my_row0 + g + 8 * r;
      const float p = key <= row ? exp2f(fmaf(s[nt][e], scale_log2, -lse_log2[r])) : 0.0f;
      dp[nt][e] = p * (dp[nt][e] - delta[r]);
    }
  }
}

// The log2-domain log-sum-exp and delta of this thread's query rows my_row0 + g and + 8 of head h
// (+infinity and 0 past the sequence, so that a padding row's probabilities are 0).
__device__ __forceinline__ void query_row_stats(const BackwardArgs& a, int b, int h, int my_row0, int g,
                                                float (&lse_log2)[2], float (&delta)[2]) {
  const std::int64_t stats = (static_cast<std::int64_t>(b) * a.heads + h) * a.seq;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = my_row0 + g + 8 * r;
    lse_log2[r] = row < a.seq ? a.lse[stats + row] * 1.4426950408889634f : INFINITY;
    delta[r] = row < a.seq ? a.delta[stats + row] : 0.0f;
  }
}

// Row `pos` (its position in the sequence) of the gradient of rotated q or k, held as this
// thread's accumulators (acc[dt][2r + e] is column 8 dt + 2c + e), scaled and rotated back by
// RoPE's transpose into BF16 at dst: the FP32 product acc * scale, then rope_kernel<true>'s FP32
// operations in its order, which is what the FP32 buffer and the RoPE pass computed (the fused
// kernel's dK still goes that way, so split and fused give the same dK bits). A column i < D/2
// and its partner i + D/2 sit in the same thread (tiles dt and dt + D/16).
template <int D>
__device__ __forceinline__ void store_unrotated_gradient_row(bf16* dst, const float (&acc)[D / 8][4], int r, int c,
                                                             const BackwardArgs& a, int pos) {
  const float* cos_row = a.rope_cos + static_cast<std::int64_t>(pos) * (D / 2);
  const float* sin_row = a.rope_sin + static_cast<std::int64_t>(pos) * (D / 2);
#pragma unroll
  for (int dt = 0; dt < D / 16; ++dt) {
    const int i = dt * 8 + 2 * c;
    const float2 cs = *reinterpret_cast<const float2*>(cos_row + i);
    const float2 sn = *reinterpret_cast<const float2*>(sin_row + i);
    float first[2], second[2];
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const float lo = fmul(acc[dt][2 * r + e], a.scale), hi = fmul(acc[dt + D / 16][2 * r + e], a.scale);
      const float cv = e == 0 ? cs.x : cs.y, sv = e == 0 ? sn.x : sn.y;
      first[e] = fadd(fmul(lo, cv), fmul(hi, sv));
      second[e] = fsub(fmul(hi, cv), fmul(lo, sv));
    }
    *reinterpret_cast<std::uint32_t*>(dst + i) = pack_bf16(first[0], first[1]);
    *reinterpret_cast<std::uint32_t*>(dst + i + D / 2) = pack_bf16(second[0], second[1]);
  }
}

// One block of 64 keys (4 warps x 16 keys) of head `kvh`, batch `b`: dK and dV over every query
// (Br at a time), and with WithDq each query block's dQ contribution added in order.
template <int D, bool WithDq>
__device__ __forceinline__ void key_block_backward(const BackwardArgs& a, unsigned char* shared, int key_block, int kvh,
                                                   int b) {
  constexpr int Bc = kKeyRows, Br = key_query_rows<D>(), kThreads = kKeyWarps * 32;
  using KTile = SwizzledTile<Bc, D>;
  using QTile = SwizzledTile<Br, D>;
  const std::uint32_t k_tile = shared_address(shared), v_tile = k_tile + KTile::kBytes;
  const std::uint32_t q_tiles = v_tile + KTile::kBytes, do_tiles = q_tiles + 2 * QTile::kBytes;
  float* row_stats = reinterpret_cast<float*>(shared + 2 * KTile::kBytes + 4 * QTile::kBytes);  // [2][lse | delta][Br]
  const std::uint32_t ds_tile = shared_address(row_stats + 4 * Br);
  const std::uint32_t staging = ds_tile + kKeyRows * ds_row_bytes<D>();  // WithDq: the dQ sum so far
  int* release_at = nullptr;  // WithDq: the counter of the previous item, and its new value
  int release_value = 0;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, c = lane % 4;

  const int key0 = key_block * Bc;
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
    prefetch_next_and_wait(item, items, load_item);
    __syncthreads();
    const int h = kvh * a.group + item / per_head, q0 = (first_q_block + item % per_head) * Br;
    const std::uint32_t q_tile = q_tiles + buf * QTile::kBytes, do_tile = do_tiles + buf * QTile::kBytes;
    const float* lse_log2 = row_stats + (buf * 2 + 0) * Br;
    const float* delta = row_stats + (buf * 2 + 1) * Br;

    const bool active = q0 + Br - 1 >= my_key0;  // some query of the block sees some key of this warp
    float s[Br / 8][4], dp[Br / 8][4];
    if (active) {
      // S^T = K Q^T and dP^T = V dO^T, this warp's 16 keys x Br queries.
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
      key_major_probabilities(s, dp, q0, my_key0, g, c, a.scale_log2, lse_log2, delta);
    }

    // With WithDq: the order of this query block's dQ additions (the diagonal key block writes,
    // key block 0 adds last and scales), the position's counter, and the earlier sum staged in
    // shared memory while the dV and dK products run.
    const int last_key_block = min((q0 + Br - 1) / Bc, (a.seq - 1) / Bc);
    const int position = last_key_block - key_block;
    int* const added = WithDq ? a.dq_added + (static_cast<std::int64_t>(b) * a.heads + h) * q_blocks + q0 / Br : nullptr;
    if constexpr (WithDq) {
      // dS^T in BF16 (the same rounding as the dK product's operand) for the dQ product; zero
      // where every query of the block precedes this warp's keys.
#pragma unroll
      for (int nt = 0; nt < Br / 8; ++nt) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const std::uint32_t at = ds_tile + (warp * 16 + g + 8 * r) * ds_row_bytes<D>() + (nt * 8 + 2 * c) * 2;
          const std::uint32_t packed = active ? pack_bf16(dp[nt][2 * r], dp[nt][2 * r + 1]) : 0u;
          asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(at), "r"(packed));
        }
      }
      // Thread 0 releases the previous item's counter (its stores have had a whole item's time
      // to drain) before it waits for this one's: a block never waits while holding a count.
      if (threadIdx.x == 0) {
        if (release_at != nullptr) store_release(release_at, release_value);
        if (position > 0) {
          while (load_acquire(added) != position) __nanosleep(32);
        }
      }
      release_at = added;
      release_value = position + 1;
      __syncthreads();  // dS^T of all 64 keys is in shared memory; the earlier additions are visible
      if (position > 0) {
        // The sum so far, 16-byte chunks through L2 (cp.async.cg: never a stale L1 line).
        constexpr int kChunksPerRow = D / 4;
        for (int i = threadIdx.x; i < Br * kChunksPerRow; i += kThreads) {
          const int row = i / kChunksPerRow, chunk = i % kChunksPerRow;
          const bool valid = q0 + row < a.seq;
          const float* src = a.dq + (token0 + (valid ? q0 + row : 0)) * a.dqk_stride + h * D + chunk * 4;
          copy_async_16(staging + row * staging_row_bytes<D>() + chunk * 16, src, valid);
        }
        copy_async_commit();
      }
    }

    if (active) {
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

    if constexpr (WithDq) {
      // dQ contribution = dS K, Br queries x D: warp w takes 16 rows (m-tile w % (Br / 16)) and
      // 64 columns.
      constexpr int kMTiles = Br / 16, kCols = 64;
      static_assert(kMTiles * (D / kCols) == kKeyWarps, "the four warps cover the dQ tile once");
      const int mt = warp % kMTiles, col0 = (warp / kMTiles) * kCols;
      float dq[kCols / 8][4];
#pragma unroll
      for (int i = 0; i < kCols / 8; ++i) dq[i][0] = dq[i][1] = dq[i][2] = dq[i][3] = 0.0f;
#pragma unroll
      for (int kk = 0; kk < Bc / 16; ++kk) {
        std::uint32_t af[4];
        load_matrix_x4_transposed(af, at_fragment_address(ds_tile, ds_row_bytes<D>(), mt * 16, kk, lane));
#pragma unroll
        for (int np = 0; np < kCols / 16; ++np) {
          std::uint32_t kf[4];
          load_matrix_x4_transposed(kf, bt_fragment_address<KTile>(k_tile, kk * 16, col0 / 16 + np, lane));
          mma_bf16(dq[2 * np], af, kf[0], kf[1]);
          mma_bf16(dq[2 * np + 1], af, kf[2], kf[3]);
        }
      }
      if (position > 0) {
        copy_async_wait<0>();
        __syncthreads();  // the staged sum is complete
      }
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int row = mt * 16 + g + 8 * r;
        if (q0 + row >= a.seq) continue;
        float* dq_row = a.dq + (token0 + q0 + row) * a.dqk_stride + h * D + col0;
#pragma unroll
        for (int nt = 0; nt < kCols / 8; ++nt) {
          float2 v = make_float2(dq[nt][2 * r], dq[nt][2 * r + 1]);
          if (position > 0) {
            float2 sum;
            asm volatile("ld.shared.v2.f32 {%0, %1}, [%2];\n"
                         : "=f"(sum.x), "=f"(sum.y)
                         : "r"(staging + row * staging_row_bytes<D>() + (col0 + nt * 8 + 2 * c) * 4));
            v = make_float2(sum.x + v.x, sum.y + v.y);
          }
          if (key_block == 0) v = make_float2(v.x * a.scale, v.y * a.scale);
          __stcg(reinterpret_cast<float2*>(dq_row + nt * 8 + 2 * c), v);
        }
      }
    }
    __syncthreads();  // the tiles of this item are refilled by the next prefetch
  }
  if constexpr (WithDq) {
    // The last item's stores: the barrier above orders them before thread 0's release, which
    // is cumulative (a block that acquires the count sees them all; CUTLASS's semaphores rely on
    // the same).
    if (threadIdx.x == 0 && release_at != nullptr) store_release(release_at, release_value);
  }

  // Each thread owns keys g, g + 8 of its warp and columns 8 dt + 2c, 2c + 1.
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int key = my_key0 + g + 8 * r;
    if (key >= a.seq) continue;
    bf16* dv_row = a.dv + (token0 + key) * a.dv_stride + kvh * D;
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt) {
      *reinterpret_cast<std::uint32_t*>(dv_row + dt * 8 + 2 * c) = pack_bf16(dv[dt][2 * r], dv[dt][2 * r + 1]);
    }
    if constexpr (WithDq) {
      float* dk_row = a.dk + (token0 + key) * a.dqk_stride + kvh * D;
#pragma unroll
      for (int dt = 0; dt < D / 8; ++dt) {
        *reinterpret_cast<float2*>(dk_row + dt * 8 + 2 * c) = make_float2(fmul(dk[dt][2 * r], a.scale),
                                                                          fmul(dk[dt][2 * r + 1], a.scale));
      }
    } else {
      store_unrotated_gradient_row<D>(a.dk_unrotated + (token0 + key) * a.dv_stride + kvh * D, dk, r, c, a, key);
    }
  }
}

// ---- fused: persistent blocks take (batch, kv head, key block) tasks in dQ-addition order ---

template <int D>
__global__ void __launch_bounds__(kKeyWarps * 32) fused_backward_kernel(const BackwardArgs a) {
  wait_for_upstream_grids();
  extern __shared__ __align__(128) unsigned char shared[];
  int* task_slot = reinterpret_cast<int*>(shared + fused_shared_bytes<D>() - 16);
  const int key_blocks = (a.seq + kKeyRows - 1) / kKeyRows;
  const int tasks = key_blocks * a.kv_heads * a.batch;
  for (;;) {
    if (threadIdx.x == 0) *task_slot = atomicAdd(a.next_task, 1);
    __syncthreads();
    const int task = *task_slot;
    __syncthreads();  // read by every thread before thread 0 takes the next one
    if (task >= tasks) return;
    // Within a (batch, kv head), the last key block first: its dQ additions come first.
    const int key_block = key_blocks - 1 - task % key_blocks, head_task = task / key_blocks;
    key_block_backward<D, true>(a, shared, key_block, head_task % a.kv_heads, head_task / a.kv_heads);
    __syncthreads();  // the tiles are refilled by the next task
  }
}

// ---- split, dK and dV: one block per key block; the first key blocks see the most queries
// and start first. At head dim 64 three blocks fit an SM within 168 registers, without spills
// (two otherwise: docs/cuda.md) -------------------------------------------------------------

template <int D>
__global__ void __launch_bounds__(kKeyWarps * 32, D == 64 ? 3 : 1) key_gradient_kernel(const BackwardArgs a) {
  wait_for_upstream_grids();
  extern __shared__ __align__(128) unsigned char shared[];
  key_block_backward<D, false>(a, shared, static_cast<int>(blockIdx.x), static_cast<int>(blockIdx.y),
                               static_cast<int>(blockIdx.z));
}

// ---- split, dQ: a block of 64 queries (4 warps x 16 rows), keys 64 at a time -------------

inline constexpr int kQueryWarps = 4, kQueryRows = 64, kQueryKeys = 64;

template <int D>
constexpr int query_shared_bytes() {
  return 2 * SwizzledTile<kQueryRows, D>::kBytes + 4 * SwizzledTile<kQueryKeys, D>::kBytes;
}

template <int D>
__global__ void __launch_bounds__(kQueryWarps * 32) query_gradient_kernel(const BackwardArgs a) {
  wait_for_upstream_grids();
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
  const auto load_kv = [&](int j, int buf) {  // key block j into buffer buf
    load_tile_async<Bc, D, kThreads>(k_tiles + buf * KTile::kBytes, k, a.qk_stride, j * Bc, a.seq);
    load_tile_async<Bc, D, kThreads>(v_tiles + buf * KTile::kBytes, v, a.v_stride, j * Bc, a.seq);
  };
  load_kv(0, 0);
  copy_async_commit();
  const int key_blocks = min((a.seq + Bc - 1) / Bc, (q0 + Br - 1) / Bc + 1);

  const int my_row0 = q0 + warp * 16;
  float lse_log2[2], delta[2];
  query_row_stats(a, b, h, my_row0, g, lse_log2, delta);
  float dq[D / 8][4];
#pragma unroll
  for (int i = 0; i < D / 8; ++i) dq[i][0] = dq[i][1] = dq[i][2] = dq[i][3] = 0.0f;

  for (int j = 0; j < key_blocks; ++j) {
    const std::uint32_t k_tile = k_tiles + (j & 1) * KTile::kBytes, v_tile = v_tiles + (j & 1) * KTile::kBytes;
    prefetch_next_and_wait(j, key_blocks, load_kv);
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
      query_major_gradient(s, dp, key0, my_row0, g, c, a.scale_log2, lse_log2, delta);
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
    store_unrotated_gradient_row<D>(a.dq_unrotated + (token0 + row) * a.dv_stride + h * D, dq, r, c, a, row);
  }
}

}  // namespace quartet::cuda::flash

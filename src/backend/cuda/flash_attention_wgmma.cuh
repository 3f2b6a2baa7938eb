// The flash-attention forward pass on Hopper's warpgroup products (wgmma, sm_90a), head dim 128:
// the same online softmax as forward_kernel (flash_attention.cuh), with each warpgroup of four
// warps computing 64 query rows' scores against 128 keys in one asynchronous m64n128 product
// chain that reads Q and K straight from shared memory, and P V with P from registers. The
// accumulators have mma.sync's fragment layout, so the masking and softmax code is the same.
#pragma once

#include "backend/cuda/flash_attention.cuh"
#include "backend/cuda/dependent_launch.cuh"
#include "backend/cuda/wgmma.cuh"

namespace quartet::cuda::flash {

// A [Rows x Cols] BF16 tile (Cols 64 or 128) as [Rows x 64] halves of 128-byte rows whose 16-byte
// chunks are XOR-swizzled with the row's low three bits: wgmma's 128-byte swizzle when the tile is
// 1024-byte aligned (the hardware applies the XOR to address bits 4-6 from bits 7-9).
template <int Rows, int Cols = 128>
struct WgmmaTile {
  static_assert(Cols == 64 || Cols == 128, "one or two 64-column halves");
  static constexpr int kHalves = Cols / 64, kHalfBytes = Rows * 128, kBytes = kHalves * kHalfBytes;

  __device__ static std::uint32_t offset(int row, int chunk) {  // chunk: 0 .. Cols / 8 - 1
    return static_cast<std::uint32_t>((chunk >> 3) * kHalfBytes + row * 128 + (((chunk & 7) ^ (row & 7)) << 4));
  }
};

// Rows [row0, row0 + Rows) of a matrix with Cols columns into a WgmmaTile; rows at or beyond
// `rows` are zero-filled.
template <int Rows, int Threads, int Cols = 128>
__device__ __forceinline__ void load_wgmma_tile_async(std::uint32_t tile, const bf16* base, std::int64_t stride, int row0,
                                                      int rows) {
  constexpr int kRowChunks = Cols / 8, kChunks = Rows * kRowChunks;
  static_assert(kChunks % Threads == 0, "every thread copies the same number of chunks");
#pragma unroll
  for (int i = threadIdx.x; i < kChunks; i += Threads) {
    const int r = i / kRowChunks, chunk = i % kRowChunks;
    const bool valid = row0 + r < rows;
    const bf16* src = base + (valid ? static_cast<std::int64_t>(row0 + r) * stride : 0) + chunk * 8;
    copy_async_16(tile + WgmmaTile<Rows, Cols>::offset(r, chunk), src, valid);
  }
}

inline constexpr int kWgmmaGroups = 2, kWgmmaRows = 64 * kWgmmaGroups, kWgmmaKeys = 128;
inline constexpr int kWgmmaThreads = 128 * kWgmmaGroups;

constexpr int forward_wgmma_shared_bytes() {
  // Q, double-buffered K and V, and room to align the first tile to 1024 bytes.
  return WgmmaTile<kWgmmaRows>::kBytes + 4 * WgmmaTile<kWgmmaKeys>::kBytes + 1024;
}

__global__ void __launch_bounds__(kWgmmaThreads) forward_wgmma_kernel(const ForwardArgs a) {
  wait_for_upstream_grids();
  constexpr int Br = kWgmmaRows, Bc = kWgmmaKeys;
  using QTile = WgmmaTile<Br>;
  using KTile = WgmmaTile<Bc>;
  extern __shared__ __align__(1024) unsigned char shared[];
  const std::uint32_t q_tile = shared_address_aligned_1024(shared);
  const std::uint32_t k_tiles = q_tile + QTile::kBytes, v_tiles = k_tiles + 2 * KTile::kBytes;
  const int group = threadIdx.x / 128, warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, c = lane % 4;

  const int q_blocks = (a.seq + Br - 1) / Br;
  const int q0 = (q_blocks - 1 - static_cast<int>(blockIdx.x)) * Br;  // the longest rows start first
  const int h = blockIdx.y, b = blockIdx.z, kvh = h / a.group;
  const std::int64_t token0 = static_cast<std::int64_t>(b) * a.seq;
  const bf16* q = a.q + token0 * a.qk_stride + h * 128;
  const bf16* k = a.k + token0 * a.qk_stride + kvh * 128;
  const bf16* v = a.v + token0 * a.v_stride + kvh * 128;

  load_wgmma_tile_async<Br, kWgmmaThreads>(q_tile, q, a.qk_stride, q0, a.seq);
  copy_async_commit();
  const auto load_kv = [&](int j, int buf) {  // key block j into buffer buf
    load_wgmma_tile_async<Bc, kWgmmaThreads>(k_tiles + buf * KTile::kBytes, k, a.qk_stride, j * Bc, a.seq);
    load_wgmma_tile_async<Bc, kWgmmaThreads>(v_tiles + buf * KTile::kBytes, v, a.v_stride, j * Bc, a.seq);
  };
  load_kv(0, 0);
  copy_async_commit();
  const int key_blocks = min((a.seq + Bc - 1) / Bc, (q0 + Br - 1) / Bc + 1);

  float o[16][4];
#pragma unroll
  for (int i = 0; i < 16; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
  float row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.0f, 0.0f};  // per thread: rows g, g + 8
  const int group_row0 = q0 + group * 64, my_row0 = group_row0 + (warp % 4) * 16;

  for (int j = 0; j < key_blocks; ++j) {
    const std::uint32_t k_tile = k_tiles + (j & 1) * KTile::kBytes, v_tile = v_tiles + (j & 1) * KTile::kBytes;
    prefetch_next_and_wait(j, key_blocks, load_kv);
    fence_async_shared();
    __syncthreads();

    const int key0 = j * Bc;
    if (key0 <= group_row0 + 63) {  // some key of the block is visible to some row of this warpgroup
      float s[16][4];
#pragma unroll
      for (int i = 0; i < 16; ++i) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.0f;
      // S = Q K^T: eight k-steps of 16 over the head dim, both operands K-major.
      fence_accumulator(s);
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < 8; ++kk) {
        const std::uint32_t column = (kk & 3) * 32;  // 16 columns of a 64-column half
        const std::uint64_t qd = swizzle128_descriptor(
            q_tile + (kk >> 2) * QTile::kHalfBytes + group * 64 * 128 + column, 16, 1024);
        const std::uint64_t kd = swizzle128_descriptor(k_tile + (kk >> 2) * KTile::kHalfBytes + column, 16, 1024);
        wgmma_m64n128k16_ss(s, qd, kd, kk > 0 ? 1 : 0);
      }
      wgmma_commit();
      wgmma_wait_all();
      fence_accumulator(s);

      online_softmax_step(s, o, key0, my_row0, g, c, a.scale_log2, row_max, row_sum);
      // O += P V: P from registers in 16-key steps, V [keys][128] read transposed (MN-major):
      // its two 64-column halves lie a half tile apart, its 8-key row groups 1024 bytes apart.
      std::uint32_t pf[8][4];
#pragma unroll
      for (int kk = 0; kk < 8; ++kk) c_to_a_fragment(pf[kk], s[2 * kk], s[2 * kk + 1]);
      fence_accumulator(o);
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < 8; ++kk) {
        wgmma_m64n128k16_rs(o, pf[kk], swizzle128_descriptor(v_tile + kk * 16 * 128, KTile::kHalfBytes, 1024));
      }
      wgmma_commit();
      wgmma_wait_all();
      fence_accumulator(o);
    }
    __syncthreads();  // the buffer is refilled by the next iteration's prefetch
  }

  float inv[2];
  finish_rows(a, row_max, row_sum, my_row0, g, c, h, b, inv);
  bf16* out = a.out + token0 * a.out_stride + h * 128;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = my_row0 + g + 8 * r;
    if (row >= a.seq) continue;
#pragma unroll
    for (int dt = 0; dt < 16; ++dt) {
      *reinterpret_cast<std::uint32_t*>(out + static_cast<std::int64_t>(row) * a.out_stride + dt * 8 + 2 * c) =
          pack_bf16(o[dt][2 * r] * inv[r], o[dt][2 * r + 1] * inv[r]);
    }
  }
}

}  // namespace quartet::cuda::flash

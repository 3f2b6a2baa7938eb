// The NVFP4-operand GEMM (gemm_fp4_operand.h), in two forms that share the dequantization and
// the products (multiply_stage, run_tiles). Both: a block of two consumer warpgroups computes a
// 128 x 256 tile of out (or 128 x 128), k advancing 64 at a time through a ring of shared-memory
// stages holding B's BF16 tile in wgmma's 128-byte swizzle and A's codes for the block's 128 rows;
// each warp turns its 16 rows' codes into the A fragments of four k16 steps, each feeding the
// products of its 128-column halves (A from registers, B K-major from shared memory), while the
// products of the k-tile before run: the fragments are double buffered, and a stage is refilled
// only once the products that read it have finished. The wider tile spends the dequantization of
// A on twice the products. Tiles are taken in gemm_tile_order.h's banded order.
// - The cp.async form (the default): a block per tile, every thread copying its share of each
//   stage several k-tiles ahead, A's scales staged beside the codes.
// - The warp-specialised form (QUARTET_FP4_OPERAND_KERNEL=tma, below): a persistent grid with a
//   TMA producer warpgroup, mbarrier hand-over, and split-K where out has fewer tiles than SMs.
// The output is stored from the accumulators' registers, alpha applied, in FP32 or BF16.
#include "backend/cuda/gemm_fp4_operand.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cuda/ptx>
#include <algorithm>
#include <limits>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/dependent_launch.cuh"
#include "backend/cuda/device_caps.h"
#include "backend/cuda/device_memory.h"
#include "backend/cuda/env_switch.h"
#include "backend/cuda/gemm_tile_order.h"
#include "backend/cuda/message.h"
#include "backend/cuda/tensor_core.cuh"
#include "backend/cuda/tensor_map.h"
#include "backend/cuda/wgmma.cuh"
#include "quartet/error.h"

namespace quartet::cuda {
namespace {

constexpr int kTileRows = 128, kDepth = 64, kStages = 5, kThreads = 256;
// A's codes are 32 bytes a row a stage, stored 48 apart so that the eight rows a warp reads at
// once fall in different banks.
constexpr int kCodePitch = 48;
constexpr int kCodeStageBytes = kTileRows * kCodePitch, kScaleStageBytes = kTileRows * 4;

// A block's tile of out: 128 rows by 128 Halves columns, each warpgroup's 64 rows by one m64n128
// product per half.
template <int Halves>
struct TileShape {
  static constexpr int kCols = 128 * Halves;
  static constexpr int kBStageBytes = kCols * kDepth * 2;
  static constexpr int kSharedBytes = kStages * (kBStageBytes + kCodeStageBytes + kScaleStageBytes) + 1024;  // + alignment room
};

struct Fp4OperandArgs {
  const unsigned char* a_codes;
  const unsigned char* a_scales;
  const __nv_bfloat16* b;
  void* out;
  const float* alpha;
  int m, n, k;
  bool out_bf16, accumulate;
  // Split-K (the TMA kernel; gemm_tile_order.h): with more than one run a tile, each run stores
  // its FP32 product, without alpha, at partial + run * m * n, and a second pass sums them.
  float* partial;
  SplitK split;
};

#if QUARTET_HAS_WGMMA  // the helpers of the kernel, whose body only sm_90a compiles

__device__ __forceinline__ std::uint32_t bf16x2_mul(std::uint32_t a, std::uint32_t b) {
  const __nv_bfloat162 p = __hmul2(*reinterpret_cast<const __nv_bfloat162*>(&a), *reinterpret_cast<const __nv_bfloat162*>(&b));
  return *reinterpret_cast<const std::uint32_t*>(&p);
}

// Four E2M1 codes (the low 16 bits of `codes`: elements 0 and 1 in byte 0's low and high nibble,
// 2 and 3 in byte 1's) times one scale (`scale2`: the BF16 pair (s, s)) as two BF16 pairs:
// `first` = (e0, e1), `second` = (e2, e3). The products are exact: a code has at most two
// significant bits, an E4M3 scale four, BF16 eight.
__device__ __forceinline__ void dequantize_four(std::uint32_t codes, std::uint32_t scale2, std::uint32_t& first,
                                                std::uint32_t& second) {
  // The BF16 patterns of the magnitudes 0, 0.5, 1, 1.5, 2, 3, 4, 6 (0x0000, 0x3F00, 0x3F80,
  // 0x3FC0, 0x4000, 0x4040, 0x4080, 0x40C0), split into low and high bytes: byte i of each
  // 8-byte pair belongs to magnitude i, so one byte permutation looks up four codes.
  constexpr std::uint32_t kLow0 = 0xC0800000u, kLow1 = 0xC0804000u, kHigh0 = 0x3F3F3F00u, kHigh1 = 0x40404040u;
  const std::uint32_t magnitudes = codes & 0x7777u;
  const std::uint32_t low = __byte_perm(kLow0, kLow1, magnitudes);
  std::uint32_t high = __byte_perm(kHigh0, kHigh1, magnitudes);
  // Each code's sign (its nibble's bit 3) to bit 7 of its byte: codes 0 and 2 from the codes
  // shifted up by a nibble, 1 and 3 where they are.
  high |= __byte_perm(codes, codes << 4, 0x1504u) & 0x80808080u;
  first = bf16x2_mul(__byte_perm(low, high, 0x5140u), scale2);
  second = bf16x2_mul(__byte_perm(low, high, 0x7362u), scale2);
}

// The four E4M3 scales of one row's 64 k (one byte each) as BF16 pairs (s, s): E4M3 -> FP16 in
// hardware, FP16 -> FP32 -> BF16 exactly (every E4M3 value is a BF16 value).
__device__ __forceinline__ void scales_to_bf16_pairs(std::uint32_t scales, std::uint32_t (&pairs)[4]) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const unsigned short two = static_cast<unsigned short>(scales >> (16 * h));
    std::uint32_t halves;
    asm("cvt.rn.f16x2.e4m3x2 %0, %1;" : "=r"(halves) : "h"(two));
    const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&halves));
    pairs[2 * h] = pack_bf16(f.x, f.x);
    pairs[2 * h + 1] = pack_bf16(f.y, f.y);
  }
}

template <int Halves>
struct StageAddresses {
  std::uint32_t b, codes, scales;  // shared-memory addresses of the ring's three regions
  __device__ explicit StageAddresses(std::uint32_t base)
      : b(base), codes(base + kStages * TileShape<Halves>::kBStageBytes), scales(codes + kStages * kCodeStageBytes) {}
  __device__ std::uint32_t b_at(int stage) const { return b + stage * TileShape<Halves>::kBStageBytes; }
  __device__ std::uint32_t codes_at(int stage) const { return codes + stage * kCodeStageBytes; }
  __device__ std::uint32_t scales_at(int stage) const { return scales + stage * kScaleStageBytes; }
};

// One thread's share of each stage's copies, its addresses worked out once: 4 Halves 16-byte
// chunks of B (rows tid / 8 + 32 i, chunk tid % 8, at its 128-byte swizzle), one of A's codes
// (row tid / 2, half tid % 2) and, for the first 128 threads, A's four scale bytes of row tid.
// Rows past m or n read as zeros.
template <int Halves>
struct StageLoader {
  static constexpr int kBChunks = 4 * Halves;
  const __nv_bfloat16* b;
  const unsigned char *codes, *scales;
  std::int64_t b_stride;  // 32 rows of B
  std::uint32_t b_offset, codes_offset, scales_offset, b_valid;
  bool codes_valid, scales_valid, loads_scales;

  __device__ StageLoader(const Fp4OperandArgs& a, int m0, int n0) {
    const int tid = threadIdx.x, chunk = tid % 8;
    b_valid = 0;
#pragma unroll
    for (int i = 0; i < kBChunks; ++i) b_valid |= (n0 + tid / 8 + 32 * i < a.n ? 1u : 0u) << i;
    b_stride = static_cast<std::int64_t>(32) * a.k;
    b = a.b + static_cast<std::int64_t>(n0 + tid / 8) * a.k + chunk * 8;  // not read where invalid
    b_offset = (tid / 8) * 128 + ((chunk ^ ((tid / 8) & 7)) << 4);      // the same swizzle for every i
    const int code_row = tid / 2;
    codes_valid = m0 + code_row < a.m;
    codes = a.a_codes + (codes_valid ? static_cast<std::int64_t>(m0 + code_row) * (a.k / 2) : 0) + (tid % 2) * 16;
    codes_offset = code_row * kCodePitch + (tid % 2) * 16;
    loads_scales = tid < kTileRows;
    scales_valid = loads_scales && m0 + tid < a.m;
    scales = a.a_scales + (scales_valid ? static_cast<std::int64_t>(m0 + tid) * (a.k / 16) : 0);
    scales_offset = tid * 4;
  }

  // Queues the copies of k-tile `tile` into `stage`.
  __device__ __forceinline__ void load(const StageAddresses<Halves>& s, int stage, int tile) const {
    const int k0 = tile * kDepth;
#pragma unroll
    for (int i = 0; i < kBChunks; ++i) {
      const bool valid = (b_valid >> i) & 1u;
      copy_async_16(s.b_at(stage) + i * 32 * 128 + b_offset, valid ? b + i * b_stride + k0 : b, valid);
    }
    copy_async_16(s.codes_at(stage) + codes_offset, codes + k0 / 2, codes_valid);
    if (loads_scales) copy_async_4(s.scales_at(stage) + scales_offset, scales + k0 / 16, scales_valid);
  }
};

// The A fragments of one stage's four k16 steps from one of this thread's rows (half 0: row r
// of its warp's 16, half 1: row r + 8): its 32 code bytes at the shared-memory address `codes`
// and its four E4M3 scales in `scale_bytes` (mma.sync's A layout: fragment[j] = (row r, k
// 2c..2c+1), (r + 8, 2c..), (r, 2c+8..), (r + 8, 2c+8..) of step j).
__device__ __forceinline__ void dequantize_row(std::uint32_t codes, std::uint32_t scale_bytes, int half, int c,
                                               std::uint32_t (&fragment)[4][4]) {
  std::uint32_t words[8], scales[4];
  asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(words[0]), "=r"(words[1]), "=r"(words[2]), "=r"(words[3]) : "r"(codes) : "memory");
  asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(words[4]), "=r"(words[5]), "=r"(words[6]), "=r"(words[7]) : "r"(codes + 16) : "memory");
  scales_to_bf16_pairs(scale_bytes, scales);
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    // Step j's codes for k 2c, 2c+1 are byte c of word 2j; for k 2c+8, 2c+9, byte c of word 2j+1.
    const std::uint32_t four = __byte_perm(words[2 * j], words[2 * j + 1], static_cast<std::uint32_t>(c | ((4 + c) << 4)));
    dequantize_four(four, scales[j], fragment[j][half], fragment[j][2 + half]);
  }
}

// Both rows' fragments from a cp.async stage (codes kCodePitch apart, scales beside them).
template <int Halves>
__device__ __forceinline__ void load_a_fragments(const StageAddresses<Halves>& s, int stage, int row, int c,
                                                 std::uint32_t (&fragment)[4][4]) {
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int r = row + 8 * half;
    std::uint32_t scale_bytes;
    asm volatile("ld.shared.u32 %0, [%1];" : "=r"(scale_bytes) : "r"(s.scales_at(stage) + r * 4) : "memory");
    dequantize_row(s.codes_at(stage) + r * kCodePitch, scale_bytes, half, c, fragment);
  }
}

// Keeps the compiler from reusing or moving a set of A fragments across this point.
__device__ __forceinline__ void fence_fragments(std::uint32_t (&fragment)[4][4]) {
#pragma unroll
  for (int j = 0; j < 4; ++j) {
#pragma unroll
    for (int e = 0; e < 4; ++e) asm volatile("" : "+r"(fragment[j][e])::"memory");
  }
}

// One k-tile's products, d[h] += A B for each 128-column half h: the four k16 steps' fragments
// against the stage's B tile at `b` (128-byte swizzle, K-major, halves 16 KiB apart); then the
// wait until at most these are unfinished, so the tile before's fragments and stage are free.
template <int Halves>
__device__ __forceinline__ void multiply_stage(float (&d)[Halves][16][4], std::uint32_t (&fragment)[4][4], std::uint32_t b) {
  fence_fragments(fragment);
#pragma unroll
  for (int h = 0; h < Halves; ++h) fence_accumulator(d[h]);
  wgmma_fence();
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    if constexpr (Halves == 1) {  // as two m64n64 products, each fragment read twice (wgmma.cuh)
      wgmma_m64n64k16_rs<0, true>(d[0], fragment[j], swizzle128_descriptor(b + j * 32, 16, 1024));
      wgmma_m64n64k16_rs<8, true>(d[0], fragment[j], swizzle128_descriptor(b + 64 * 128 + j * 32, 16, 1024));
    } else {
#pragma unroll
      for (int h = 0; h < Halves; ++h) {
        wgmma_m64n128k16_rs<true>(d[h], fragment[j], swizzle128_descriptor(b + h * 128 * 128 + j * 32, 16, 1024));
      }
    }
  }
  wgmma_commit();
  wgmma_wait<1>();
}

// The main loop both kernels share: step(t, fragments, previous) for each k-tile t, tiles t and t
// + 1 on their own fragment sets (even and odd, the loop unrolled twice, so that a set is never
// rewritten while the products that read it may still run), then the wait for the last products.
template <class Step, class Fence>
__device__ __forceinline__ void run_tiles(int tiles, Step& step, Fence& fence_accumulators) {
  std::uint32_t even[4][4] = {}, odd[4][4] = {};
  for (int t = 0; t < tiles; t += 2) {
    step(t, even, odd);
    if (t + 1 < tiles) step(t + 1, odd, even);
  }
  wgmma_wait<0>();
  fence_fragments(even);
  fence_fragments(odd);
  fence_accumulators();
}

// out[at] and, where `pair`, out[at + 1] (+)= v0, v1, in the output's type.
__device__ __forceinline__ void store_pair(const Fp4OperandArgs& a, std::int64_t at, bool pair, float v0, float v1) {
  if (a.out_bf16) {
    __nv_bfloat16* out = static_cast<__nv_bfloat16*>(a.out) + at;
    if (pair && a.n % 2 == 0) {  // 4-byte aligned: one store for the pair
      float2 v = make_float2(v0, v1);
      if (a.accumulate) {
        const float2 old = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(out));
        v.x += old.x;
        v.y += old.y;
      }
      *reinterpret_cast<__nv_bfloat162*>(out) = __float22bfloat162_rn(v);
      return;
    }
    if (a.accumulate) {
      v0 += __bfloat162float(out[0]);
      if (pair) v1 += __bfloat162float(out[1]);
    }
    out[0] = __float2bfloat16_rn(v0);
    if (pair) out[1] = __float2bfloat16_rn(v1);
    return;
  }
  float* out = static_cast<float*>(a.out) + at;
  if (pair && a.n % 2 == 0) {  // 8-byte aligned
    float2 v = make_float2(v0, v1);
    if (a.accumulate) {
      const float2 old = *reinterpret_cast<const float2*>(out);
      v.x += old.x;
      v.y += old.y;
    }
    *reinterpret_cast<float2*>(out) = v;
  } else {
    out[0] = a.accumulate ? out[0] + v0 : v0;
    if (pair) out[1] = a.accumulate ? out[1] + v1 : v1;
  }
}

// This thread's outputs of a warpgroup's accumulators: rows r and r + 8, in each 128-column
// half, columns 8j + 2c and 8j + 2c + 1, times `alpha`.
template <int Halves>
__device__ __forceinline__ void store_tile(const Fp4OperandArgs& a, float (&d)[Halves][16][4], int r, int n0, int c,
                                           float alpha) {
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int row = r + 8 * half;
    if (row >= a.m) continue;
#pragma unroll
    for (int h = 0; h < Halves; ++h) {
#pragma unroll
      for (int j = 0; j < 16; ++j) {
        const int col = n0 + 128 * h + 8 * j + 2 * c;
        if (col >= a.n) continue;
        store_pair(a, static_cast<std::int64_t>(row) * a.n + col, col + 1 < a.n, alpha * d[h][j][2 * half],
                   alpha * d[h][j][2 * half + 1]);
      }
    }
  }
}

#endif

template <int Halves>
__global__ void __launch_bounds__(kThreads, 1) gemm_fp4_operand_kernel(const Fp4OperandArgs a, const TileOrder order) {
  wait_for_upstream_grids();
#if QUARTET_HAS_WGMMA
  extern __shared__ __align__(1024) unsigned char shared[];
  const StageAddresses<Halves> s(shared_address_aligned_1024(shared));
  int tile_row, tile_col;
  order.at(blockIdx.x, tile_row, tile_col);
  const int m0 = tile_row * kTileRows, n0 = tile_col * TileShape<Halves>::kCols;
  const int group = threadIdx.x / 128, warp = (threadIdx.x / 32) % 4, lane = threadIdx.x % 32, g = lane / 4, c = lane % 4;
  const int tiles = a.k / kDepth;

  // Tiles 0 .. kStages - 3 in flight before the loop; each step queues one more, so that the
  // stage it refills was read by the products two tiles back, which have finished by then.
  const StageLoader<Halves> loader(a, m0, n0);
#pragma unroll
  for (int t = 0; t < kStages - 2; ++t) {
    if (t < tiles) loader.load(s, t, t);
    copy_async_commit();
  }
  float d[Halves][16][4];
#pragma unroll
  for (int h = 0; h < Halves; ++h)
#pragma unroll
    for (int j = 0; j < 16; ++j) d[h][j][0] = d[h][j][1] = d[h][j][2] = d[h][j][3] = 0.0f;
  const auto fence_accumulators = [&] {
#pragma unroll
    for (int h = 0; h < Halves; ++h) fence_accumulator(d[h]);
  };
  const int row = group * 64 + warp * 16 + g;
  // The products read their A fragments from registers asynchronously, until a wait says they
  // have finished: tile t's fragments must not be overwritten before the wait of step t + 1.
  // run_tiles keeps two sets apart, for even and odd tiles.
  const auto step = [&](int t, std::uint32_t(&fragment)[4][4], std::uint32_t(&previous)[4][4]) {
    const int stage = t % kStages;
    copy_async_wait<kStages - 3>();  // tile t has landed (this thread's copies)
    fence_async_shared();
    __syncthreads();                 // everyone's copies, and the products of tile t - 2 are done
    if (t + kStages - 2 < tiles) loader.load(s, (t + kStages - 2) % kStages, t + kStages - 2);
    copy_async_commit();
    load_a_fragments(s, stage, row, c, fragment);
    multiply_stage(d, fragment, s.b_at(stage));  // then tile t - 1's fragments and stage are free
    fence_fragments(previous);
    fence_accumulators();
  };
  run_tiles(tiles, step, fence_accumulators);

  store_tile(a, d, m0 + row, n0, c, *a.alpha);
#else
  __trap();
#endif
}

// The warp-specialised form (QUARTET_FP4_OPERAND_KERNEL=tma): a persistent grid, each block
// taking the tiles of out in TileOrder's order, a grid's width apart. A third warpgroup, whose
// first thread fills the stages with TMA copies (B's [128 Halves x 64] box in the 128-byte
// swizzle, A's [128 x 32-byte] code box), runs ahead across tiles: while the consumers store one tile, the
// stages fill with the next one's. Each stage is handed over by mbarriers: `full` completes when
// its bytes have landed, `empty` when all 256 consumer threads have seen the products that read it
// finish; their phases run on over the block's k-tiles of every tile. The consumer warpgroups
// run no copy instructions and no block-wide barrier; each reads its rows' scales from global
// memory one tile ahead. The producer gives up registers (setmaxnreg) to the consumers, whose
// 128 accumulators a thread need them.
namespace tma {

constexpr int kThreads = 384, kStages = 5, kCodeStageBytes = kTileRows * 32;

// A block's tile of out: 128 rows by 128 Halves columns (TileShape's, with this ring's bytes).
template <int Halves>
struct Shape {
  static constexpr int kCols = TileShape<Halves>::kCols, kBStageBytes = TileShape<Halves>::kBStageBytes;
  static constexpr int kSharedBytes = kStages * (kBStageBytes + kCodeStageBytes) + 2 * kStages * 8 + 1024;
};

#if QUARTET_HAS_WGMMA
template <int Halves>
struct Ring {
  static constexpr int kBStageBytes = Shape<Halves>::kBStageBytes;
  std::uint32_t b, codes, full, empty;  // shared-memory addresses: stages, then the barriers
  __device__ explicit Ring(std::uint32_t base)
      : b(base), codes(base + kStages * kBStageBytes), full(codes + kStages * kCodeStageBytes), empty(full + kStages * 8) {}
};

__device__ __forceinline__ std::uint64_t* barrier(std::uint32_t address) {
  return static_cast<std::uint64_t*>(__cvta_shared_to_generic(address));
}

__device__ __forceinline__ void wait(std::uint32_t address, std::uint32_t parity) {
  while (!::cuda::ptx::mbarrier_try_wait_parity(barrier(address), parity)) {
  }
}

// A unit of work: a tile of out and one run of its k-tiles (all of them without split-K).
struct Unit {
  int tile_row, tile_col, run, k_begin, k_count;
};

__device__ __forceinline__ std::int64_t units(const TileOrder& order, const Fp4OperandArgs& a) {
  return order.count() * a.split.splits;
}

__device__ __forceinline__ Unit unit_at(const TileOrder& order, const Fp4OperandArgs& a, std::int64_t u) {
  Unit w;
  w.run = static_cast<int>(u / order.count());
  order.at(u % order.count(), w.tile_row, w.tile_col);
  w.k_begin = w.run * a.split.k_tiles_per_split;
  w.k_count = min(a.split.k_tiles_per_split, a.k / kDepth - w.k_begin);
  return w;
}

// The producer: every k-tile of every unit of this block, in order, each into the next stage
// once the consumers have freed it. `use` counts the stages' fillings over all units.
template <int Halves>
__device__ __forceinline__ void produce(const CUtensorMap& b_map, const CUtensorMap& codes_map, const Ring<Halves>& ring,
                                        const TileOrder& order, const Fp4OperandArgs& a) {
  constexpr int kBStageBytes = Shape<Halves>::kBStageBytes;
  std::uint32_t use = 0;
  for (std::int64_t u = blockIdx.x; u < units(order, a); u += gridDim.x) {
    const Unit w = unit_at(order, a, u);
    for (int i = 0; i < w.k_count; ++i, ++use) {
      const int t = w.k_begin + i;
      const std::uint32_t stage = use % kStages;
      wait(ring.empty + 8 * stage, ((use / kStages) & 1) ^ 1);  // a fresh barrier passes parity 1
      std::uint64_t* full = barrier(ring.full + 8 * stage);
      ::cuda::ptx::mbarrier_arrive_expect_tx(::cuda::ptx::sem_release, ::cuda::ptx::scope_cta, ::cuda::ptx::space_shared, full,
                                           kBStageBytes + kCodeStageBytes);
      const std::int32_t b_at[2] = {t * kDepth, w.tile_col * Shape<Halves>::kCols},
                         codes_at[2] = {t * kDepth / 2, w.tile_row * kTileRows};
      ::cuda::ptx::cp_async_bulk_tensor(::cuda::ptx::space_cluster, ::cuda::ptx::space_global,
                                      __cvta_shared_to_generic(ring.b + stage * kBStageBytes), &b_map, b_at, full);
      ::cuda::ptx::cp_async_bulk_tensor(::cuda::ptx::space_cluster, ::cuda::ptx::space_global,
                                      __cvta_shared_to_generic(ring.codes + stage * kCodeStageBytes), &codes_map, codes_at,
                                      full);
    }
  }
}
#endif

}  // namespace tma

template <int Halves>
__global__ void __launch_bounds__(tma::kThreads, 1)
    gemm_fp4_operand_tma_kernel(const __grid_constant__ CUtensorMap b_map, const __grid_constant__ CUtensorMap codes_map,
                                const Fp4OperandArgs a, const TileOrder order) {
  wait_for_upstream_grids();
#if QUARTET_HAS_WGMMA
  extern __shared__ __align__(1024) unsigned char shared[];
  const tma::Ring<Halves> ring(shared_address_aligned_1024(shared));
  constexpr int kBStageBytes = tma::Shape<Halves>::kBStageBytes;
  if (threadIdx.x == 0) {
    for (int i = 0; i < tma::kStages; ++i) {
      ::cuda::ptx::mbarrier_init(tma::barrier(ring.full + 8 * i), 1);
      ::cuda::ptx::mbarrier_init(tma::barrier(ring.empty + 8 * i), 256);
    }
    ::cuda::ptx::fence_mbarrier_init(::cuda::ptx::sem_release, ::cuda::ptx::scope_cluster);
  }
  __syncthreads();

  if (threadIdx.x < 128) {  // the producer warpgroup
    asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n");
    if (threadIdx.x == 0) tma::produce<Halves>(b_map, codes_map, ring, order, a);
    return;
  }

  asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n");
  const int group = threadIdx.x / 128 - 1, warp = (threadIdx.x / 32) % 4, lane = threadIdx.x % 32, g = lane / 4, c = lane % 4;
  const int row = group * 64 + warp * 16 + g;  // this thread's rows: row and row + 8 of a tile's 128
  std::uint32_t first_use = 0;                 // the stages' fillings before this unit's first k-tile
  for (std::int64_t u = blockIdx.x; u < tma::units(order, a); u += gridDim.x) {
    const tma::Unit w = tma::unit_at(order, a, u);
    const int m0 = w.tile_row * kTileRows, n0 = w.tile_col * tma::Shape<Halves>::kCols;
    // This tile's rows' scale words (four E4M3 bytes a k-tile) from the unit's first k-tile on,
    // read from global memory one k-tile ahead.
    const unsigned char* scale_rows[2];
    bool scale_valid[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      scale_valid[h] = m0 + row + 8 * h < a.m;
      scale_rows[h] = a.a_scales + (scale_valid[h] ? static_cast<std::int64_t>(m0 + row + 8 * h) * (a.k / 16) : 0) +
                      static_cast<std::int64_t>(w.k_begin) * 4;
    }
    const auto scale_words = [&](int t, std::uint32_t (&words)[2]) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        words[h] = scale_valid[h] && t < w.k_count ? __ldg(reinterpret_cast<const unsigned int*>(scale_rows[h] + t * 4)) : 0u;
      }
    };
    std::uint32_t scales_now[2], scales_next[2];
    scale_words(0, scales_now);

    float d[Halves][16][4];
#pragma unroll
    for (int h = 0; h < Halves; ++h)
#pragma unroll
      for (int j = 0; j < 16; ++j) d[h][j][0] = d[h][j][1] = d[h][j][2] = d[h][j][3] = 0.0f;
    const auto fence_accumulators = [&] {
#pragma unroll
      for (int h = 0; h < Halves; ++h) fence_accumulator(d[h]);
    };
    const auto step = [&](int t, std::uint32_t(&fragment)[4][4], std::uint32_t(&previous)[4][4]) {
      const std::uint32_t use = first_use + t, stage = use % tma::kStages;
      scale_words(t + 1, scales_next);
      tma::wait(ring.full + 8 * stage, (use / tma::kStages) & 1);
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        dequantize_row(ring.codes + stage * tma::kCodeStageBytes + (row + 8 * h) * 32, scales_now[h], h, c, fragment);
      }
      multiply_stage<Halves>(d, fragment, ring.b + stage * kBStageBytes);  // then k-tile t - 1's are free
      if (t > 0) ::cuda::ptx::mbarrier_arrive(tma::barrier(ring.empty + 8 * ((use - 1) % tma::kStages)));
      fence_fragments(previous);
      fence_accumulators();
      scales_now[0] = scales_next[0];
      scales_now[1] = scales_next[1];
    };
    run_tiles(w.k_count, step, fence_accumulators);  // ends with every product finished
    first_use += w.k_count;
    ::cuda::ptx::mbarrier_arrive(tma::barrier(ring.empty + 8 * ((first_use - 1) % tma::kStages)));
    if (a.split.splits == 1) {
      store_tile(a, d, m0 + row, n0, c, *a.alpha);
    } else {  // this run's FP32 partial, summed and scaled by the reduce pass
      Fp4OperandArgs partial = a;
      partial.out = a.partial + static_cast<std::int64_t>(w.run) * a.m * a.n;
      partial.out_bf16 = false;
      partial.accumulate = false;
      store_tile(partial, d, m0 + row, n0, c, 1.0f);
    }
  }
#else
  __trap();
#endif
}

// Split-K's second pass: out (+)= alpha * (the runs' partials summed in run order).
__global__ void gemm_fp4_operand_reduce_kernel(const Fp4OperandArgs a) {
  wait_for_upstream_grids();
  const std::int64_t total = static_cast<std::int64_t>(a.m) * a.n;
  const float alpha = *a.alpha;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    float sum = a.partial[i];
    for (int run = 1; run < a.split.splits; ++run) sum += a.partial[run * total + i];
    const float v = alpha * sum;
    if (a.out_bf16) {
      __nv_bfloat16* out = static_cast<__nv_bfloat16*>(a.out) + i;
      *out = __float2bfloat16_rn(a.accumulate ? v + __bfloat162float(*out) : v);
    } else {
      float* out = static_cast<float*>(a.out) + i;
      *out = a.accumulate ? *out + v : v;
    }
  }
}

template <int Halves>
void launch_tiles(const Fp4OperandArgs& args, cudaStream_t stream) {
  constexpr int bytes = TileShape<Halves>::kSharedBytes;
  static const bool configured = (allow_shared_bytes(gemm_fp4_operand_kernel<Halves>, bytes), true);
  (void)configured;
  const TileOrder order = tile_order(args.m, args.n, args.k, kTileRows, TileShape<Halves>::kCols);
  launch_dependent(gemm_fp4_operand_kernel<Halves>, dim3(static_cast<unsigned>(order.count())), kThreads, bytes, stream, args, order);
  QUARTET_CUDA_LAUNCHED();
}

template <int Halves>
void launch_tma(const Fp4OperandArgs& args, cudaStream_t stream) {
  using Shape = tma::Shape<Halves>;
  static const bool configured = (allow_shared_bytes(gemm_fp4_operand_tma_kernel<Halves>, Shape::kSharedBytes), true);
  (void)configured;
  const auto k = static_cast<std::uint64_t>(args.k), m = static_cast<std::uint64_t>(args.m), n = static_cast<std::uint64_t>(args.n);
  const CUtensorMap b_map = tensor_map_2d(args.b, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, k, n, 2 * k, kDepth, Shape::kCols,
                                          CU_TENSOR_MAP_SWIZZLE_128B);
  const CUtensorMap codes_map = tensor_map_2d(args.a_codes, CU_TENSOR_MAP_DATA_TYPE_UINT8, k / 2, m, k / 2, kDepth / 2, kTileRows,
                                              CU_TENSOR_MAP_SWIZZLE_NONE);
  const TileOrder order = tile_order(args.m, args.n, args.k, kTileRows, Shape::kCols);
  const int sms = multiprocessors();
  Fp4OperandArgs a = args;
  a.split = split_k(order.count(), args.k / kDepth, sms);
  // Stream-ordered on the default stream (device_memory.h): freed after the passes that use it.
  std::shared_ptr<void> partial;
  if (a.split.splits > 1) {
    partial = device_alloc(static_cast<std::size_t>(a.split.splits) * static_cast<std::size_t>(args.m) *
                           static_cast<std::size_t>(args.n) * sizeof(float));
    a.partial = static_cast<float*>(partial.get());
  }
  const std::int64_t units = order.count() * a.split.splits;
  const auto blocks = static_cast<unsigned>(capped_blocks(std::min<std::int64_t>(units, sms)));
  launch_dependent(gemm_fp4_operand_tma_kernel<Halves>, dim3(blocks), tma::kThreads, Shape::kSharedBytes, stream, b_map,
                   codes_map, a, order);
  QUARTET_CUDA_LAUNCHED();
  if (a.split.splits > 1) {
    constexpr int kReduceThreads = 256;
    const std::int64_t total = static_cast<std::int64_t>(args.m) * args.n;
    const auto reduce_blocks = static_cast<unsigned>(
        capped_blocks(std::min<std::int64_t>((total + kReduceThreads - 1) / kReduceThreads, std::int64_t{sms} * 8)));
    launch_dependent(gemm_fp4_operand_reduce_kernel, dim3(reduce_blocks), kReduceThreads, 0, stream, a);
    QUARTET_CUDA_LAUNCHED();
  }
}

}  // namespace

bool gemm_fp4_operand_fits(std::int64_t m, std::int64_t n, std::int64_t k) {
  constexpr std::int64_t kMax = std::numeric_limits<int>::max();
  // The grid's x dimension holds a block per tile (the narrowest tile's count).
  return m > 0 && n > 0 && k > 0 && k % kDepth == 0 && m <= kMax && n <= kMax && k <= kMax &&
         ((m + kTileRows - 1) / kTileRows) * ((n + 127) / 128) <= kMax && device_has_wgmma();
}

void gemm_fp4_operand(void* out, DType out_dtype, const void* a_codes, const void* a_scales, const void* b, std::int64_t m,
                      std::int64_t n, std::int64_t k, const float* alpha, bool accumulate, cudaStream_t stream) {
  if (!gemm_fp4_operand_fits(m, n, k)) {
    throw Error(message("gemm_fp4_operand: ", m, " x ", n, " x ", k,
                        " does not fit (an sm_90 GPU, k a multiple of 64, m and n positive)"));
  }
  if (out_dtype != DType::f32 && out_dtype != DType::bf16) {
    throw Error(message("gemm_fp4_operand: the output must be f32 or bf16, got ", dtype_name(out_dtype)));
  }
  Fp4OperandArgs args{static_cast<const unsigned char*>(a_codes), static_cast<const unsigned char*>(a_scales),
                      static_cast<const __nv_bfloat16*>(b), out, alpha, static_cast<int>(m), static_cast<int>(n),
                      static_cast<int>(k), out_dtype == DType::bf16, accumulate, nullptr, SplitK{1, static_cast<int>(k / kDepth)}};
  // The cp.async kernel unless QUARTET_FP4_OPERAND_KERNEL is "tma" (the warp-specialised one),
  // with 128 x 256 tiles unless QUARTET_FP4_OPERAND_TILE is "128x128" (both read at every call,
  // so that a benchmark can time them in one process).
  const bool wide = env_keeps_usual("QUARTET_FP4_OPERAND_TILE", "128x256", "128x128");
  if (!env_keeps_usual("QUARTET_FP4_OPERAND_KERNEL", "cp-async", "tma")) {
    if (wide) {
      launch_tma<2>(args, stream);
    } else {
      launch_tma<1>(args, stream);
    }
  } else if (wide) {
    launch_tiles<2>(args, stream);
  } else {
    launch_tiles<1>(args, stream);
  }
}

}  // namespace quartet::cuda

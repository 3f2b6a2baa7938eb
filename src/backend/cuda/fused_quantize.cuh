// Fused NVFP4 quantization kernels (kernels.md, "Recipes that worked"): the input is read
// with 16-byte loads, rotated in registers and quantized in one pass that writes packed codes
// and scales; the per-tensor amax, where a quantizer needs it before its scales, is a second
// pass of the same kernel that writes each block's maximum instead of codes; every block of the
// quantizing pass reduces those maxima and turns them into the tensor constants itself. Nothing
// accumulates across blocks into memory that would have to be zeroed first (a memset per
// quantization). Included by quantize.cu, which owns the constants' functions, the non-finite
// record and the dispatch.
//
// Thread layout, the same for every kernel here: one thread holds one 16-element group along
// the reduction dimension of one output row; eight consecutive lanes (an "item") hold the
// eight consecutive groups of one 128-element span of that row, so lane & 7 is the group's
// position in its RHT-128 block (lane & 1 for RHT-32; RHT-16 stays inside the thread). An
// MXFP4 group of 32 is the two threads of a lane pair (lane & 1 says which half): they swap
// their halves' maximum and partial sums with one shuffle each. Every
// result lands where the thread already is: amax, scales, the MS-EDEN sums and the packed
// codes need no shared memory, and the only cross-lane traffic is three butterfly stages of
// the RHT-128 and the three-step sum of the research-form EDEN correction.
//
// Bitwise agreement with the CPU: the rotation performs exactly the FP32 operations of
// rht_forward_block (rht_block.h) in the same order (stages h = 1..8 inside the thread, then
// h = 16, 32, 64 across lanes, lower lane a + b, upper lane a - b, then the multiplication by
// fl(1/sqrt(n))); the quantizers are the shared group functions; the lane butterfly of the
// EDEN sums is tree_sum's pairwise order. Codes and scales are therefore the CPU's bit for
// bit, which the GPU tests check.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include "quartet/numerics/divide_u32.h"

#include <cstdint>
#include <utility>

namespace quartet::cuda {
namespace {

constexpr int kFusedThreads = 256;

// Blocks of the quantizing kernels that must fit on one SM at once, which caps their registers
// (2: up to 128 per thread). A build-time knob for occupancy experiments, e.g.
// `cmake --preset release -DCMAKE_CUDA_FLAGS=-DQUARTET_FUSED_MIN_BLOCKS=4` (64 registers, some
// spills: scripts/ptxas-report.sh shows them); the default is what the results files measure.
#ifndef QUARTET_FUSED_MIN_BLOCKS
#define QUARTET_FUSED_MIN_BLOCKS 2
#endif
constexpr int kFusedMinBlocks = QUARTET_FUSED_MIN_BLOCKS;
// The "lean" kernels fit in 80 registers without spilling (sm_90a, sm_100a, sm_120a), which lets
// three blocks share an SM: the row-wise amax pass, the MS-EDEN and MXFP4 row-wise quantizing
// passes from BF16 (measured about 4% faster for MS-EDEN and QuEST than two blocks) and some
// tile kernels (tile_min_blocks). At 80 registers rtn and 4/6 would spill 4-104
// bytes, SR from FP32 4, the MXFP4 kinds from FP32 up to 32 on sm_100a/sm_120a, the other tile
// kernels more (docs/results/ptxas-sm90a.txt); they keep kFusedMinBlocks. Also a build-time knob
// (never below kFusedMinBlocks).
#ifndef QUARTET_LEAN_MIN_BLOCKS
#define QUARTET_LEAN_MIN_BLOCKS 3
#endif
constexpr int kLeanMinBlocks =
    QUARTET_LEAN_MIN_BLOCKS > kFusedMinBlocks ? QUARTET_LEAN_MIN_BLOCKS : kFusedMinBlocks;

// One block's maxima of a pass, as the bit patterns of non-negative floats (which order as
// their bits, so that a maximum of bits is the floats' maximum, and a NaN's bits stay on top as
// the atomic maximum kept them): the magnitudes' amax and, for ms_eden_g16, the largest
// provisional scale c_g.
struct alignas(8) PartialMax {
  unsigned amax_bits;
  unsigned corrected_bits;
};

// The maxima over partials[0, count), in every thread of the block; every thread must call it
// (it synchronises the block), and blockDim.x must be a multiple of 32 (full-warp shuffles).
// count 0 gives zeros.
__device__ __forceinline__ PartialMax block_reduce_partial_max(const PartialMax* partials, unsigned count) {
  __shared__ PartialMax warp_max[32];
  PartialMax m{0u, 0u};
  for (unsigned i = threadIdx.x; i < count; i += blockDim.x) {
    const PartialMax p = partials[i];
    m.amax_bits = max(m.amax_bits, p.amax_bits);
    m.corrected_bits = max(m.corrected_bits, p.corrected_bits);
  }
  for (int off = 16; off > 0; off /= 2) {
    m.amax_bits = max(m.amax_bits, __shfl_xor_sync(0xFFFFFFFFu, m.amax_bits, off));
    m.corrected_bits = max(m.corrected_bits, __shfl_xor_sync(0xFFFFFFFFu, m.corrected_bits, off));
  }
  const unsigned warp = threadIdx.x / 32, warps = (blockDim.x + 31) / 32;
  __syncthreads();  // warp_max may still be read by an earlier call
  if ((threadIdx.x & 31) == 0) warp_max[warp] = m;
  __syncthreads();
  m = warp_max[0];
  for (unsigned w = 1; w < warps; ++w) {
    m.amax_bits = max(m.amax_bits, warp_max[w].amax_bits);
    m.corrected_bits = max(m.corrected_bits, warp_max[w].corrected_bits);
  }
  return m;
}
constexpr int kGroupsPerItem = 8;
constexpr std::int64_t kMaxRowwiseItems = std::int64_t{1} << 31;  // items a row-wise launch may count

// The 128 rotation signs as bits (bit j set: sign j is -1), read by a thread as the 16 bits
// of its group's position in the rotation block. Flipping the FP32 sign bit is the CPU's
// multiplication by -1, exactly.
struct SignBits {
  std::uint32_t word[4];
};

SignBits sign_bits(const Rotation& r) {
  SignBits s{};
  for (int j = 0; j < r.size; ++j) {
    if (r.signs[static_cast<std::size_t>(j)] < 0.0f) s.word[j / 32] |= 1u << (j % 32);
  }
  return s;
}

struct FusedArgs {
  QuantizerKind kind;
  std::int64_t rows = 0;    // output rows
  std::int64_t groups = 0;  // 16-groups per output row (padded_cols / 16; MXFP4 groups are two of them)
  DivideU32 by_items_per_row{};  // row-wise kernel: division by ceil(groups / 8)
  DivideU32 by_row_tiles{};      // tile kernel: division by ceil(rows / kTileR) (both-ways kernel: kBothWaysR)
  int rotation = 0;         // 0, 16, 32 or 128 (the kernels take it as a template argument too)
  SignBits signs{};
  // Quantizing pass of the two-pass kinds (and MXFP4): the amax pass's per-block maxima, from
  // which every block reduces the tensor amax and computes the tensor constants
  // (tensor_constants); block 0 stores t. MXFP4 passes a count of 0 (amax 0: its constants do
  // not depend on it).
  const PartialMax* tensor_partials = nullptr;
  unsigned tensor_partial_count = 0;
  ConstantsArgs constants_args{};
  float* tensor_scale = nullptr;
  // Amax pass and ms_eden_g16's pass: each block's maxima, at partial_max[blockIdx.x].
  PartialMax* partial_max = nullptr;
  RandomContext random{};
  float eden_scale = 1.0f;
  float* corrected = nullptr;            // ms_eden_g16: provisional FP32 scales c_g
  std::uint8_t* codes = nullptr;
  std::uint8_t* scales = nullptr;
  std::uint8_t* trust_mask = nullptr;    // mxfp4_quest
  __nv_bfloat16* dequantized = nullptr;  // rtn, four_over_six, sr, MXFP4: e2m1 x block scale for the GEMM, or null
  std::int64_t logical_cols = 0;         // for the position of a non-finite input
  bool check_finite = false;
  unsigned long long sequence = 0;
};

// The tensor constants of a quantizing pass (every thread of the block calls it); the first
// thread of the grid stores t.
__device__ __forceinline__ Constants pass_constants(const FusedArgs& a) {
  const PartialMax m = block_reduce_partial_max(a.tensor_partials, a.tensor_partial_count);
  const Constants k = tensor_constants(__uint_as_float(m.amax_bits), a.constants_args);
  if (blockIdx.x == 0 && threadIdx.x == 0) *a.tensor_scale = k.t;
  return k;
}

template <int kRotation>
__device__ __forceinline__ std::uint32_t group_sign_bits(const SignBits& s, int lane_in_item) {
  const int base = (lane_in_item * kNvGroup) & (kRotation - 1);
  const int w = base >> 5;
  const std::uint32_t word = w == 0 ? s.word[0] : (w == 1 ? s.word[1] : (w == 2 ? s.word[2] : s.word[3]));
  return (word >> (base & 31)) & 0xFFFFu;
}

// One butterfly stage of fwht_inplace_f32 inside the thread's 16 elements (compile-time
// indices keep v in registers).
template <int H>
__device__ __forceinline__ void butterfly_stage(float* v) {
#pragma unroll
  for (int base = 0; base < kNvGroup; base += 2 * H) {
#pragma unroll
    for (int j = base; j < base + H; ++j) {
      const float p = v[j], q = v[j + H];
      v[j] = fadd(p, q);
      v[j + H] = fsub(p, q);
    }
  }
}

__device__ __forceinline__ void flip_signs(float* x, std::uint32_t signs) {
#pragma unroll
  for (int i = 0; i < kNvGroup; ++i) x[i] = __uint_as_float(__float_as_uint(x[i]) ^ (((signs >> i) & 1u) << 31));
}

// x <- H x (unnormalised) on this thread's 16 elements of an n-block spread over n/16 lanes:
// fwht_inplace_f32's butterflies, the stages h >= 16 by lane shuffles (the lower lane of a
// pair holds a and computes a + b, the upper holds b and computes a - b).
template <int kRotation>
__device__ __forceinline__ void walsh_hadamard_group(float* x, int lane_in_item) {
  butterfly_stage<1>(x);
  butterfly_stage<2>(x);
  butterfly_stage<4>(x);
  butterfly_stage<8>(x);
#pragma unroll
  for (int h = kNvGroup; h < kRotation; h *= 2) {
    const int partner = h / kNvGroup;
    // a - b is (-b) + a: one FMA by -1 or +1, whose product is exact, so it rounds as the
    // CPU's subtraction or addition does.
    const float sign = (lane_in_item & partner) != 0 ? -1.0f : 1.0f;
#pragma unroll
    for (int i = 0; i < kNvGroup; ++i) {
      const float other = __shfl_xor_sync(0xFFFFFFFFu, x[i], partner);
      x[i] = __fmaf_rn(x[i], sign, other);
    }
  }
}

// x <- H x / sqrt(n): rht_forward_block's operations after its sign flips D, which the
// quantizing kernels apply to their raw input words (FlipTable below).
template <int kRotation>
__device__ __forceinline__ void mix_group(float* x, int lane_in_item) {
  walsh_hadamard_group<kRotation>(x, lane_in_item);
  const float norm = rht_norm(kRotation);
#pragma unroll
  for (int i = 0; i < kNvGroup; ++i) x[i] = fmul(x[i], norm);
}

// x <- D H x / sqrt(n): rht_inverse_block's operations (the multiplication by a sign is the
// flip of the sign bit).
template <int kRotation>
__device__ __forceinline__ void unrotate_group(float* x, const SignBits& sign_words, int lane_in_item) {
  mix_group<kRotation>(x, lane_in_item);
  flip_signs(x, group_sign_bits<kRotation>(sign_words, lane_in_item));
}

// The rotation's sign flips as XOR masks on the words a kernel loads (kWords 32-bit words per
// thread and group), one entry per position of a group in its rotation block (lane & 7).
// Flipping an element's sign bit while it is still packed is the CPU's multiplication by -1,
// exactly, and costs one LOP3 per word instead of two instructions per element. The table
// lives in shared memory and is read again every iteration (volatile), so that it holds no
// registers across the loop: keeping eight mask registers live instead was measured slower
// (commit 30f2e53).
template <int kWords>
struct FlipTable {
  uint4 entry[kGroupsPerItem][kWords / 4];

  // Filled by the block's first eight threads, before a __syncthreads(). Element i of a group
  // lives in word Layout::word(i), its sign in the bits Layout::mask(i) (two for a word that
  // holds the element of two rows).
  template <int kRotation, class Layout>
  __device__ void fill(const SignBits& signs) {
    if (threadIdx.x >= kGroupsPerItem) return;
    const std::uint32_t bits = group_sign_bits<kRotation>(signs, static_cast<int>(threadIdx.x));
    std::uint32_t w[kWords] = {};
#pragma unroll
    for (int i = 0; i < kNvGroup; ++i) w[Layout::word(i)] |= ((bits >> i) & 1u) != 0 ? Layout::mask(i) : 0u;
#pragma unroll
    for (int k = 0; k < kWords / 4; ++k) entry[threadIdx.x][k] = make_uint4(w[4 * k], w[4 * k + 1], w[4 * k + 2], w[4 * k + 3]);
  }

  __device__ __forceinline__ uint4 load(int lane_in_item, int k) const {
    uint4 v;
    const unsigned address = static_cast<unsigned>(__cvta_generic_to_shared(&entry[lane_in_item][k]));
    asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "r"(address)
                 : "memory");
    return v;
  }
};

__device__ __forceinline__ uint4 xor4(uint4 a, uint4 b) { return make_uint4(a.x ^ b.x, a.y ^ b.y, a.z ^ b.z, a.w ^ b.w); }

// Once the rotation has mixed a block, every element of it depends on every input (each is a
// signed sum of all n): a NaN or infinity anywhere in the block's input makes every rotated
// element non-finite. One test of the first rotated element of a group therefore finds any
// non-finite input of its block (and rarely a finite block whose sum overflows); only then does
// the caller look at the unrotated elements one by one.
__device__ __forceinline__ bool rotated_group_may_be_non_finite(const float* y) { return !(fabsf(y[0]) < bits_float(0x7F800000u)); }

// A NaN or infinity has the largest magnitude bit patterns: one integer max per group finds
// any; only then are the elements looked at one by one.
__device__ __forceinline__ void check_group_finite(const FusedArgs& a, const float* x, std::int64_t r, std::int64_t c0) {
  std::uint32_t m = 0;
#pragma unroll
  for (int i = 0; i < kNvGroup; ++i) m = max(m, __float_as_uint(x[i]) & 0x7FFFFFFFu);
  if (m >= 0x7F800000u) {
    for (int i = 0; i < kNvGroup; ++i) note_non_finite(x[i], r, c0 + i, a.logical_cols, a.sequence);
  }
}

// Where group g of output row r keeps its packed codes (8 bytes) and its BF16 copy (16 values).
__device__ __forceinline__ std::uint8_t* group_codes(const FusedArgs& a, std::int64_t r, std::int64_t g) {
  return a.codes + r * (a.groups * kNvGroup / 2) + g * (kNvGroup / 2);
}
__device__ __forceinline__ __nv_bfloat16* group_values(const FusedArgs& a, std::int64_t r, std::int64_t g) {
  return a.dequantized + (r * a.groups + g) * kNvGroup;
}

__device__ __forceinline__ void store_packed_codes(std::uint8_t* dst, const std::uint8_t* c) {
  uint2 packed;
  packed.x = static_cast<std::uint32_t>(c[0] | (c[1] << 4) | (c[2] << 8) | (c[3] << 12) | (c[4] << 16) | (c[5] << 20) |
                                        (c[6] << 24)) | (static_cast<std::uint32_t>(c[7]) << 28);
  packed.y = static_cast<std::uint32_t>(c[8] | (c[9] << 4) | (c[10] << 8) | (c[11] << 12) | (c[12] << 16) |
                                        (c[13] << 20) | (c[14] << 24)) | (static_cast<std::uint32_t>(c[15]) << 28);
  *reinterpret_cast<uint2*>(dst) = packed;
}

// A group's e2m1 x block scale values as BF16 (exact: at most five significant bits).
__device__ __forceinline__ void store_bf16_group(__nv_bfloat16* dst, const float* v) {
  std::uint32_t w[kNvGroup / 2];
#pragma unroll
  for (int i = 0; i < kNvGroup / 2; ++i) {
    const __nv_bfloat162 pair = __floats2bfloat162_rn(v[2 * i], v[2 * i + 1]);
    w[i] = *reinterpret_cast<const std::uint32_t*>(&pair);
  }
  uint4* out = reinterpret_cast<uint4*>(dst);
  out[0] = make_uint4(w[0], w[1], w[2], w[3]);
  out[1] = make_uint4(w[4], w[5], w[6], w[7]);
}

// What rtn, 4/6 and SR produce for a group of zeros (the CPU quantizes a tiny tensor as zeros):
// the block scale of a zero maximum rounds to 0 and is replaced by 1, every element rounds to
// the code +0, and its dequantized value is +0. The GPU test of tiny tensors checks this
// against the CPU's group functions, row-wise and transposed.
__device__ __forceinline__ void store_zero_group(const FusedArgs& a, std::int64_t r, std::int64_t g, bool valid) {
  if (!valid) return;
  *reinterpret_cast<uint2*>(group_codes(a, r, g)) = make_uint2(0u, 0u);
  a.scales[r * a.groups + g] = e4m3_bits_of_grid_value(1.0f);
  if (a.dequantized) {
    uint4* out = reinterpret_cast<uint4*>(group_values(a, r, g));
    out[0] = make_uint4(0u, 0u, 0u, 0u);
    out[1] = make_uint4(0u, 0u, 0u, 0u);
  }
}

// What a thread carries across the groups it handles, reduced over the block at the end.
struct RunningMax {
  float amax = 0.0f;
  float corrected = 0.0f;
};

constexpr bool is_mx_kind(QuantizerKind k) {
  return k == QuantizerKind::mxfp4_quest || k == QuantizerKind::mxfp4_rtn || k == QuantizerKind::mxfp4_sr;
}

// The sum of the two halves of an MXFP4 group, on both lanes of the pair: tree_sum<32>'s last
// addition (the same on both, as addition commutes).
__device__ __forceinline__ float pair_sum(float half) { return fadd(half, __shfl_xor_sync(0xFFFFFFFFu, half, 1)); }

// MXFP4 (Quartet I) on this thread's half of a 32-group, g its first 16-group: the shared group
// functions on the half, the maximum and sums completed over the lane pair. Writes the codes,
// and from the even lane the E8M0 scale; QuEST also writes the half's 16 trust bits.
template <QuantizerKind K>
__device__ __forceinline__ void finish_mx_half(const FusedArgs& a, std::int64_t r, std::int64_t g, bool valid,
                                               const float* y) {
  const float own_max = group_absmax<kNvGroup>(y);
  const float m = fmax_nonneg(own_max, __shfl_xor_sync(0xFFFFFFFFu, own_max, 1));
  std::uint8_t codes[kNvGroup];
  std::uint8_t scale;
  std::uint32_t trust = 0;
  if constexpr (K == QuantizerKind::mxfp4_quest) {
    const int e = quest_exponent(m);
    const float mean = quest_mean(pair_sum(quest_scaled_sum<kNvGroup>(y, e)));
    scale = quest_scale(pair_sum(quest_scaled_square_sum<kNvGroup>(y, e, mean)), e);
    trust = quest_encode<kNvGroup>(y, scale, codes);
  } else {
    scale = mxfp4_backward_scale(m);
    std::uint16_t bits[kNvGroup];
    if constexpr (K == QuantizerKind::mxfp4_sr) {
      random_decision_range(a.random, static_cast<std::uint32_t>(r), static_cast<std::uint32_t>(g * kNvGroup), kNvGroup, bits);
    }
    mxfp4_backward_encode<kNvGroup>(y, scale, K == QuantizerKind::mxfp4_sr ? bits : nullptr, codes);
  }
  if (!valid) return;
  store_packed_codes(group_codes(a, r, g), codes);
  if ((g & 1) == 0) a.scales[r * (a.groups / 2) + g / 2] = scale;
  if constexpr (K == QuantizerKind::mxfp4_quest) {
    *reinterpret_cast<std::uint16_t*>(a.trust_mask + r * (a.groups * 2) + g * 2) = static_cast<std::uint16_t>(trust);
  }
  if (a.dequantized) {
    const float s = e8m0_decode(scale);
    float values[kNvGroup];
#pragma unroll
    for (int i = 0; i < kNvGroup; ++i) values[i] = fmul(e2m1_decode(codes[i]), s);  // exact, as the dequantization
    store_bf16_group(group_values(a, r, g), values);
  }
}

// The pass's work on one rotated group: the amax pass (kAmaxPass) reduces, the quantizing pass
// of quantizer K writes. Every lane of the warp calls this together (the research-form EDEN
// correction and the MXFP4 pair sums use shuffles); `valid` says whether the group exists.
template <bool kAmaxPass, QuantizerKind K>
__device__ __forceinline__ void finish_group(const FusedArgs& a, const Constants& k, std::int64_t r, std::int64_t g,
                                             bool valid, float* y, RunningMax& run) {
  if constexpr (kAmaxPass) {
    if (valid) run.amax = fmax_nonneg(run.amax, group_absmax<kNvGroup>(y));
    return;
  } else if constexpr (is_mx_kind(K)) {
    finish_mx_half<K>(a, r, g, valid, y);
  } else {
    // A tensor below the tiny-amax threshold quantizes as zeros. MS-EDEN g16 takes no
    // constants (its scale pass handles that case). rtn, 4/6 and SR branch to the result their
    // group functions give for zeros (the branch is uniform: k is the grid's), which costs two
    // instructions per group where zeroing y cost sixteen selects; MS-EDEN g128 zeroes y, as
    // its lanes must still take part in the correction's shuffles.
    if constexpr (K == QuantizerKind::rtn || K == QuantizerKind::four_over_six || K == QuantizerKind::sr) {
      if (k.zero) {
        store_zero_group(a, r, g, valid);
        return;
      }
    } else if constexpr (K == QuantizerKind::ms_eden_g128) {
      if (k.zero) {
#pragma unroll
        for (int i = 0; i < kNvGroup; ++i) y[i] = 0.0f;
      }
    }
    std::uint8_t codes[kNvGroup];
    float s = 1.0f;
    const TwoLevelScale two{k.t, k.k_enc};
    float values[kNvGroup];
    // Each call gets a pointer known at compile time (values or null): a pointer chosen at run
    // time put `values` in local memory (a 64-byte stack frame, ptxas -v).
    if constexpr (K == QuantizerKind::rtn) {
      const float m = group_absmax<kNvGroup>(y);
      s = a.dequantized ? rtn_group(y, m, two, codes, values) : rtn_group(y, m, two, codes, nullptr);
    } else if constexpr (K == QuantizerKind::four_over_six) {
      const FourOverSixScale fs{k.t, k.inv_t, k.k6, k.k4};
      s = a.dequantized ? four_over_six_group(y, fs, codes, values) : four_over_six_group(y, fs, codes, nullptr);
    } else if constexpr (K == QuantizerKind::sr) {
      std::uint16_t bits[kNvGroup];
      random_decision_range(a.random, static_cast<std::uint32_t>(r), static_cast<std::uint32_t>(g * kNvGroup), kNvGroup, bits);
      s = sr_group(y, two, bits, codes);
      if (a.dequantized) {
#pragma unroll
        for (int i = 0; i < kNvGroup; ++i) values[i] = fmul(e2m1_decode(codes[i]), s);  // exact, as the dequantization
      }
    } else if constexpr (K == QuantizerKind::ms_eden_g16) {
      const float m = group_absmax<kNvGroup>(y);
      const float c = ms_eden_g16_group(y, m, a.eden_scale, codes);
      if (valid) {
        a.corrected[r * a.groups + g] = c;
        run.corrected = fmax_nonneg(run.corrected, c);
        run.amax = fmax_nonneg(run.amax, m);
      }
    } else if constexpr (K == QuantizerKind::ms_eden_g128) {
      EdenPartialSums p{};
      const float sigma = ms_eden_g128_group(y, EdenResearchScale{k.t, k.k_enc}, codes, &p);
      float num = valid ? p.num : 0.0f, den = valid ? p.den : 0.0f;  // absent groups add zeros
#pragma unroll
      for (int off = 1; off < kEdenBlockGroups; off *= 2) {  // tree_sum<8> over the item's lanes
        num = fadd(num, __shfl_xor_sync(0xFFFFFFFFu, num, off));
        den = fadd(den, __shfl_xor_sync(0xFFFFFFFFu, den, off));
      }
      const float correction = eden_correction(num, den);  // as ms_eden_g128_correction
      const std::uint16_t bits = random_decision_bits(a.random, static_cast<std::uint32_t>(r), static_cast<std::uint32_t>(g));
      s = ms_eden_g128_scale(sigma, correction, bits);
    } else {
      static_assert(K == QuantizerKind::rtn, "not a fused quantizer");
    }
    if (!valid) return;
    store_packed_codes(group_codes(a, r, g), codes);
    if constexpr (K == QuantizerKind::rtn || K == QuantizerKind::four_over_six || K == QuantizerKind::sr) {
      if (a.dequantized) store_bf16_group(group_values(a, r, g), values);
    }
    if constexpr (K != QuantizerKind::ms_eden_g16) a.scales[r * a.groups + g] = e4m3_bits_of_grid_value(s);
  }
}

__device__ __forceinline__ void reduce_running_max(const FusedArgs& a, RunningMax run) {
  __shared__ float warp_amax[kFusedThreads / 32], warp_corrected[kFusedThreads / 32];
  for (int off = 16; off > 0; off /= 2) {
    run.amax = fmax2(run.amax, __shfl_xor_sync(0xFFFFFFFFu, run.amax, off));
    run.corrected = fmax2(run.corrected, __shfl_xor_sync(0xFFFFFFFFu, run.corrected, off));
  }
  const int warp = static_cast<int>(threadIdx.x / 32);
  if ((threadIdx.x & 31) == 0) {
    warp_amax[warp] = run.amax;
    warp_corrected[warp] = run.corrected;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    float m = 0.0f, c = 0.0f;
    for (int w = 0; w < kFusedThreads / 32; ++w) {
      m = fmax2(m, warp_amax[w]);
      c = fmax2(c, warp_corrected[w]);
    }
    // The next pass reduces these as bit patterns (block_reduce_partial_max).
    if (a.partial_max) a.partial_max[blockIdx.x] = PartialMax{__float_as_uint(m), __float_as_uint(c)};
  }
}

// ---- row-wise: the reduction dimension is the input's contiguous one ----------------------

// The raw bytes of one group (two 16-byte loads of bf16, four of f32), loaded one iteration
// ahead of their use so that each thread keeps a load in flight while it computes.
template <class T>
struct RawGroup {
  uint4 v[sizeof(T) * kNvGroup / 16];
};

template <class T>
__device__ __forceinline__ void load_raw(const T* p, RawGroup<T>& raw) {
  const uint4* q = reinterpret_cast<const uint4*>(p);
#pragma unroll
  for (int k = 0; k < static_cast<int>(sizeof(raw.v) / sizeof(uint4)); ++k) raw.v[k] = q[k];
}

template <class T>
__device__ __forceinline__ void unpack_raw(const RawGroup<T>& raw, float* y) {
  if constexpr (sizeof(T) == 2) {
#pragma unroll
    for (int k = 0; k < 2; ++k) {
      const std::uint32_t w[4] = {raw.v[k].x, raw.v[k].y, raw.v[k].z, raw.v[k].w};
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        y[8 * k + 2 * i] = __uint_as_float(w[i] << 16);
        y[8 * k + 2 * i + 1] = __uint_as_float(w[i] & 0xFFFF0000u);
      }
    }
  } else {
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      y[4 * k] = __uint_as_float(raw.v[k].x), y[4 * k + 1] = __uint_as_float(raw.v[k].y);
      y[4 * k + 2] = __uint_as_float(raw.v[k].z), y[4 * k + 3] = __uint_as_float(raw.v[k].w);
    }
  }
}

// Where iteration `base` of a warp puts this lane: its row, group and whether it exists. The
// host guarantees items < 2^31 (kMaxRowwiseItems), so 32-bit arithmetic and a multiply-shift
// division suffice (64-bit ones are long instruction sequences, paid per group).
struct RowSlot {
  std::uint32_t r, g;
  bool valid;
};

__device__ __forceinline__ RowSlot row_slot(std::uint32_t base, int lane, std::uint32_t items, std::uint32_t items_per_row,
                                            const DivideU32& by_items_per_row, std::uint32_t groups) {
  const std::uint32_t item = base + static_cast<std::uint32_t>(lane / kGroupsPerItem);
  RowSlot s;
  s.r = by_items_per_row.divide(item);
  s.g = (item - s.r * items_per_row) * kGroupsPerItem + static_cast<std::uint32_t>(lane & 7);
  s.valid = item < items && s.g < groups;
  return s;
}

__device__ __forceinline__ std::int64_t group_offset(const RowSlot& s, std::int64_t groups) {
  return static_cast<std::int64_t>(s.r) * groups + s.g;
}

// Where element i of a group sits in its raw words (RawGroup<T>): BF16 element 2w in the low
// half of word w, 2w + 1 in the high half; FP32 element i in word i.
template <class T>
struct RawLayout {
  static constexpr __device__ int word(int i) { return sizeof(T) == 2 ? i / 2 : i; }
  static constexpr __device__ std::uint32_t mask(int i) { return sizeof(T) == 2 && i % 2 == 0 ? 0x8000u : 0x80000000u; }
};

// The unrotated elements of a group whose rotated block was found non-finite, read again from
// the input, checked one by one.
template <class T>
__device__ __noinline__ void check_row_group_finite(const FusedArgs& a, const T* x, const RowSlot& s) {
  RawGroup<T> raw;
  load_raw(x + group_offset(s, a.groups) * kNvGroup, raw);
  float y[kNvGroup];
  unpack_raw(raw, y);
  check_group_finite(a, y, s.r, static_cast<std::int64_t>(s.g) * kNvGroup);
}

template <bool kAmaxPass, QuantizerKind K, class T>
constexpr int rowwise_min_blocks() {
  const bool lean = sizeof(T) == 2 && (kAmaxPass || K == QuantizerKind::ms_eden_g16 ||
                                       K == QuantizerKind::ms_eden_g128 || is_mx_kind(K));
  return lean ? kLeanMinBlocks : kFusedMinBlocks;
}

// x: [rows][groups * 16], row-major. A grid-stride loop over warps of four items keeps every
// lane of a warp in the same iteration (the shuffles need the whole warp).
template <bool kAmaxPass, QuantizerKind K, int kRotation, class T>
__global__ void __launch_bounds__(kFusedThreads, rowwise_min_blocks<kAmaxPass, K, T>()) fused_rowwise_kernel(FusedArgs a, const T* x) {
  wait_for_upstream_grids();  // launched as a dependent (launch_persistent)
  allow_downstream_launch();
  constexpr int kRawWords = static_cast<int>(sizeof(RawGroup<T>) / 4);
  __shared__ FlipTable<kRawWords> flips;
  const int lane = static_cast<int>(threadIdx.x & 31), lane_in_item = lane & 7;
  const auto items_per_row = static_cast<std::uint32_t>((a.groups + kGroupsPerItem - 1) / kGroupsPerItem);
  const auto items = static_cast<std::uint32_t>(a.rows * items_per_row);
  const auto groups = static_cast<std::uint32_t>(a.groups);
  const std::uint32_t warp = (blockIdx.x * blockDim.x + threadIdx.x) / 32;
  const std::uint32_t stride = gridDim.x * blockDim.x / 32 * 4;
  if constexpr (kRotation != 0) {
    flips.template fill<kRotation, RawLayout<T>>(a.signs);
    __syncthreads();
  }
  RunningMax run;
  std::uint32_t base = warp * 4;
  RowSlot slot = row_slot(base, lane, items, items_per_row, a.by_items_per_row, groups);
  RawGroup<T> raw{};
  if (slot.valid) load_raw(x + group_offset(slot, a.groups) * kNvGroup, raw);
  // After the first load is issued, so that the two reads' latencies overlap.
  Constants k{1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 0};
  if (!kAmaxPass && a.tensor_partials) k = pass_constants(a);
  for (; base < items; base += stride) {
    const RowSlot cur = slot;
    if constexpr (kRotation != 0) {
#pragma unroll
      for (int q = 0; q < kRawWords / 4; ++q) raw.v[q] = xor4(raw.v[q], flips.load(lane_in_item, q));
    }
    float y[kNvGroup];
    unpack_raw(raw, y);  // zeros for an absent group
    slot = row_slot(base + stride, lane, items, items_per_row, a.by_items_per_row, groups);
    if (slot.valid) {
      load_raw(x + group_offset(slot, a.groups) * kNvGroup, raw);
    } else {
      raw = RawGroup<T>{};
    }
    if constexpr (kRotation != 0) {
      mix_group<kRotation>(y, lane_in_item);
      if (a.check_finite && cur.valid && rotated_group_may_be_non_finite(y)) check_row_group_finite(a, x, cur);
      finish_group<kAmaxPass, K>(a, k, cur.r, cur.g, cur.valid, y, run);
    } else if constexpr (kAmaxPass) {
      // One integer maximum of the magnitude bits is the group's amax and, at or above the
      // infinity pattern, the sign of a non-finite element.
      std::uint32_t m = 0;
#pragma unroll
      for (int i = 0; i < kNvGroup; ++i) m = max(m, __float_as_uint(y[i]) & 0x7FFFFFFFu);
      if (a.check_finite && cur.valid && m >= 0x7F800000u) check_group_finite(a, y, cur.r, static_cast<std::int64_t>(cur.g) * kNvGroup);
      run.amax = fmax2(run.amax, __uint_as_float(m));
    } else {
      if (a.check_finite && cur.valid) check_group_finite(a, y, cur.r, static_cast<std::int64_t>(cur.g) * kNvGroup);
      finish_group<kAmaxPass, K>(a, k, cur.r, cur.g, cur.valid, y, run);
    }
  }
  reduce_running_max(a, run);
}

// ---- transposed and requant: 2-D tiles through shared memory ------------------------------
//
// A tile is 128 reduction indices c by 64 output rows r, held as bf16 pairs: word (c, w) holds
// rows r0 + 2w (low half) and r0 + 2w + 1. Its 16-byte quarter-rows are stored XOR-swizzled by
// c's 16-group, so that the read phase (thread (g, w) reads word (16 g + j, w) for j = 0..15)
// hits 32 distinct banks. Each thread then quantizes two output rows.
constexpr int kTileC = 128, kTileR = 64, kTileWords = kTileR / 2;

// A thread's tile words: word j holds element j of its group for both of its rows.
struct TileWordLayout {
  static constexpr __device__ int word(int i) { return i; }
  static constexpr __device__ std::uint32_t mask(int) { return 0x80008000u; }
};

__device__ __forceinline__ int swizzled_quad(int c_local, int quad) {
  return c_local * (kTileWords / 4) + (quad ^ ((c_local >> 4) & 7));
}

// Tile sources fetch their part of a tile into registers (`fetch`, issued one tile ahead so the
// loads overlap the computation on the current tile) and then write it to shared memory
// (`store`).

// Eight E2M1 codes (code i in bits 4i..4i+3 of w) times a block scale, as eight BF16 in four
// words (element 2j in the low half of word j), exactly: e2m1 x E4M3 has at most six
// significant bits. The magnitudes' BF16 bytes come from two byte-permute table lookups
// (high bytes 00 3F 3F 3F 40 40 40 40, low bytes 00 00 80 C0 00 40 80 C0 for codes 0..7),
// the signs are moved to bits 15 and 31 by one multiply, and one packed BF16 multiply applies
// the scale: a few instructions per element instead of a decode each.
__device__ __forceinline__ void e2m1x8_times_scale_bf16(std::uint32_t w, __nv_bfloat162 scale, std::uint32_t* out) {
  constexpr std::uint32_t kHiA = 0x3F3F3F00u, kHiB = 0x40404040u, kLoA = 0xC0800000u, kLoB = 0xC0804000u;
  const std::uint32_t magnitude = w & 0x77777777u, sign = w & 0x88888888u;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const std::uint32_t sel = magnitude >> (16 * h);
    const std::uint32_t hi = __byte_perm(kHiA, kHiB, sel), lo = __byte_perm(kLoA, kLoB, sel);
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      // sign bits 3 and 7 of this pair's byte -> bits 15 and 31
      const std::uint32_t pair_signs = (((sign >> (16 * h + 8 * j)) & 0x88u) * 0x01001000u) & 0x80008000u;
      std::uint32_t v = __byte_perm(lo, hi, j ? 0x7362u : 0x5140u) | pair_signs;
      __nv_bfloat162 x = *reinterpret_cast<const __nv_bfloat162*>(&v);
      x = __hmul2(x, scale);
      out[2 * h + j] = *reinterpret_cast<const std::uint32_t*>(&x);
    }
  }
}

// An E4M3 scale byte as a BF16 pair. E4M3 -> FP16 is exact (FP16 holds every E4M3 value, the
// subnormals included) and one hardware conversion on sm_89 and later; FP16 -> FP32 -> BF16 is
// exact too (four significant bits). e4m3_decode, the same value, is a branchy bit decode
// (about 15 instructions per byte in the requant tile's SASS).
__device__ __forceinline__ __nv_bfloat162 e4m3_scale_bf16x2(std::uint8_t scale) {
  const __half_raw h = __nv_cvt_fp8_to_halfraw(static_cast<__nv_fp8_storage_t>(scale), __NV_E4M3);
  return __float2bfloat162_rn(__half2float(__half(h)));
}

// x^T of a row-major bf16 [x_rows][x_cols] (x_cols % 8 == 0): c = input row, r = input column.
struct TransposedBf16Tile {
  const __nv_bfloat16* x;
  std::int64_t x_rows, x_cols;
  static constexpr bool kCheckFinite = true;
  static constexpr bool kFromCodes = false;
  struct Regs {
    uint4 v[4];
  };

  __device__ float factor() const { return 1.0f; }
  __device__ void fetch(std::int64_t c0, std::int64_t r0, Regs& regs) const {
    const int quad = static_cast<int>(threadIdx.x & 7);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const std::int64_t c = c0 + static_cast<int>(threadIdx.x >> 3) + 32 * k, r = r0 + 8 * quad;
      regs.v[k] = make_uint4(0, 0, 0, 0);
      if (c < x_rows && r < x_cols) regs.v[k] = *reinterpret_cast<const uint4*>(x + c * x_cols + r);
    }
  }
  __device__ void store(uint4* tile, const Regs& regs) const {
    const int quad = static_cast<int>(threadIdx.x & 7);
#pragma unroll
    for (int k = 0; k < 4; ++k) tile[swizzled_quad(static_cast<int>(threadIdx.x >> 3) + 32 * k, quad)] = regs.v[k];
  }
};

// E8M0 scale bytes as BF16 (exact: BF16 has FP32's exponent range, 2^-127 as a subnormal).
__device__ __forceinline__ __nv_bfloat162 e8m0_scale_bf16x2(std::uint8_t scale) {
  return __float2bfloat162_rn(e8m0_decode(scale));
}

// The dequantized transpose of a block-scaled tensor q ([q_rows][q_padded], linear scales,
// q_padded % 64 == 0) in format F (NVFP4: an E4M3 scale per 16; MXFP4: an E8M0 scale per 32):
// c = q's row, r = q's column. A tile word holds e2m1 * block scale (exact in BF16); the
// tensor scale t multiplies it in FP32 when read, as dequantize_code does.
template <ElementFormat F>
struct RequantTile {
  const std::uint8_t* codes;
  const std::uint8_t* scales;
  const float* tensor_scale;
  std::int64_t q_rows, q_padded;
  static constexpr bool kCheckFinite = false;  // dequantized codes are finite
  static constexpr bool kFromCodes = true;
  static constexpr int kGroup = F == ElementFormat::nvfp4 ? kNvGroup : kMxGroup;
  struct Regs {
    uint4 codes;
    std::uint32_t scales;  // the 32 codes' scale bytes: two E4M3 or one E8M0
  };

  __device__ float factor() const { return *tensor_scale; }
  __device__ void fetch(std::int64_t c0, std::int64_t r0, Regs& regs) const {
    const std::int64_t c = c0 + static_cast<int>(threadIdx.x >> 1), r = r0 + 32 * static_cast<int>(threadIdx.x & 1);
    regs.codes = make_uint4(0, 0, 0, 0);
    regs.scales = 0;
    if (c < q_rows) {
      regs.codes = *reinterpret_cast<const uint4*>(codes + c * (q_padded / 2) + r / 2);
      const std::uint8_t* srow = scales + c * (q_padded / kGroup) + r / kGroup;
      regs.scales = F == ElementFormat::nvfp4 ? srow[0] | (static_cast<std::uint32_t>(srow[1]) << 8) : srow[0];
    }
  }
  __device__ void store(uint4* tile, const Regs& regs) const {
    const int c_local = static_cast<int>(threadIdx.x >> 1), half = static_cast<int>(threadIdx.x & 1);
    __nv_bfloat162 s[2];
    if constexpr (F == ElementFormat::nvfp4) {
      s[0] = e4m3_scale_bf16x2(static_cast<std::uint8_t>(regs.scales & 0xFFu));
      s[1] = e4m3_scale_bf16x2(static_cast<std::uint8_t>(regs.scales >> 8));
    } else {
      s[0] = s[1] = e8m0_scale_bf16x2(static_cast<std::uint8_t>(regs.scales));
    }
    const std::uint32_t words[4] = {regs.codes.x, regs.codes.y, regs.codes.z, regs.codes.w};
    std::uint32_t w[16];
#pragma unroll
    for (int b = 0; b < 4; ++b) e2m1x8_times_scale_bf16(words[b], s[b / 2], w + 4 * b);
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      tile[swizzled_quad(c_local, 4 * half + u)] = make_uint4(w[4 * u], w[4 * u + 1], w[4 * u + 2], w[4 * u + 3]);
    }
  }
};

// One output row's group from the tile words it shares with its neighbour row (half 0: low
// halves), times the source's factor (the tensor scale of a requant source).
template <class Tile>
__device__ __forceinline__ void tile_group_values(const std::uint32_t* w, int half, float factor, float* y) {
#pragma unroll
  for (int j = 0; j < kNvGroup; ++j) {
    const float v = __uint_as_float(half ? (w[j] & 0xFFFF0000u) : (w[j] << 16));
    y[j] = Tile::kCheckFinite ? v : fmul(v, factor);
  }
}

// Tile kernels that fit in 80 registers without spilling on sm_90a, sm_100a and sm_120a (ptxas
// with QUARTET_FUSED_MIN_BLOCKS=3), so that three blocks share an SM, as for the lean row-wise
// kernels: the MS-EDEN requant quantizing passes (a tile of codes and scales; no BF16 words held
// for the next tile) once their two rows are unrolled, every requant amax pass, and the unrotated
// transposed amax pass. At 80 the MXFP4 requant passes spill 24-88 bytes on sm_100a/sm_120a, the
// rotated transposed amax passes 4-128, the transposed quantizing passes more; they keep
// kFusedMinBlocks.
template <bool kAmaxPass, QuantizerKind K, int kRotation, class Tile>
constexpr int tile_min_blocks() {
  const bool lean = kAmaxPass ? (Tile::kFromCodes || kRotation == 0)
                              : Tile::kFromCodes && (K == QuantizerKind::ms_eden_g16 || K == QuantizerKind::ms_eden_g128);
  return lean ? kLeanMinBlocks : kFusedMinBlocks;
}

template <bool kAmaxPass, QuantizerKind K, int kRotation, class Tile>
__global__ void __launch_bounds__(kFusedThreads, tile_min_blocks<kAmaxPass, K, kRotation, Tile>()) fused_tile_kernel(FusedArgs a, Tile src) {
  wait_for_upstream_grids();  // launched as a dependent (launch_persistent)
  allow_downstream_launch();
  __shared__ uint4 tile[kTileC * kTileWords / 4];
  // A tile word holds two rows' elements of one c: one mask (bits 15 and 31) flips both.
  __shared__ FlipTable<kNvGroup> flips;
  const int lane = static_cast<int>(threadIdx.x & 31), g_local = lane & 7;
  // Read only after the loop's first __syncthreads().
  if constexpr (kRotation != 0) flips.template fill<kRotation, TileWordLayout>(a.signs);
  const int pair = lane / 8 + 4 * static_cast<int>(threadIdx.x / 32);  // 0..31: rows r0 + 2 pair, + 1
  const std::int64_t row_tiles = (a.rows + kTileR - 1) / kTileR;
  const std::int64_t tiles = row_tiles * ((a.groups * kNvGroup + kTileC - 1) / kTileC);
  const float factor = src.factor();
  RunningMax run;
  const std::uint32_t* words = reinterpret_cast<const std::uint32_t*>(tile);
  typename Tile::Regs regs;
  // (c0, r0) of tile t; neighbours in r are neighbours in memory. The host guarantees
  // tiles < 2^32, so a multiply-shift division replaces a 64-bit one.
  const auto origin = [&](std::int64_t t) {
    const std::int64_t ct = a.by_row_tiles.divide(static_cast<std::uint32_t>(t));
    return std::pair<std::int64_t, std::int64_t>{ct * kTileC, (t - ct * row_tiles) * kTileR};
  };
  if (blockIdx.x < tiles) src.fetch(origin(blockIdx.x).first, origin(blockIdx.x).second, regs);
  // After the first fetch is issued, so that the two reads' latencies overlap.
  Constants k{1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 0};
  if (!kAmaxPass && a.tensor_partials) k = pass_constants(a);
  for (std::int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
    const auto [c0, r0] = origin(t);
    __syncthreads();  // the previous tile has been read
    src.store(tile, regs);
    __syncthreads();
    if (t + gridDim.x < tiles) src.fetch(origin(t + gridDim.x).first, origin(t + gridDim.x).second, regs);
    std::uint32_t w[kNvGroup];
#pragma unroll
    for (int j = 0; j < kNvGroup; ++j) w[j] = words[(kNvGroup * g_local + j) * kTileWords + (pair ^ (4 * g_local))];
    if constexpr (kRotation != 0) {
#pragma unroll
      for (int q = 0; q < kNvGroup / 4; ++q) {
        const uint4 m = flips.load(g_local, q);
        w[4 * q] ^= m.x, w[4 * q + 1] ^= m.y, w[4 * q + 2] ^= m.z, w[4 * q + 3] ^= m.w;
      }
    }
    const std::int64_t g = c0 / kNvGroup + g_local;
    // Unrolled, so that `half` is a constant in each copy: ptxas then needs fewer registers
    // (MS-EDEN + RHT-128 transposed 120 -> 109, its requant 113 -> 96) and 4/6 + RHT stops
    // spilling; with `unroll 1` each element's half was chosen at run time.
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const std::int64_t r = r0 + 2 * pair + half;
      const bool valid = r < a.rows && g < a.groups;
      float y[kNvGroup];
      tile_group_values<Tile>(w, half, factor, y);
      if constexpr (kRotation != 0) {
        mix_group<kRotation>(y, g_local);
        if (Tile::kCheckFinite && a.check_finite && valid && rotated_group_may_be_non_finite(y)) {
          float unrotated[kNvGroup];  // the sign flips leave finiteness as it was
          tile_group_values<Tile>(w, half, factor, unrotated);
          check_group_finite(a, unrotated, r, g * kNvGroup);
        }
      } else if (Tile::kCheckFinite && a.check_finite && valid) {
        check_group_finite(a, y, r, g * kNvGroup);
      }
      finish_group<kAmaxPass, K>(a, k, r, g, valid, y, run);
    }
  }
  reduce_running_max(a, run);
}

// ---- both ways: one read of a BF16 tensor for its row-wise and transposed quantizations ----
//
// A backward pass quantizes its output gradient twice: row-wise (E, for dX) and transposed (E^T,
// for dW). This kernel stages a 128 x 128 block of x in shared memory, two transposed tiles side
// by side (c = x's rows c0.., x's columns r0.. and r0 + 64..), and runs both passes of MS-EDEN
// g16 on it: the transposed tile kernel's work on each half (quantize_tile), and the row-wise
// kernel's on the block's 128 rows, whose 128 columns are one item of eight lanes as in
// fused_rowwise_kernel (so that the RHT-128's lane stages find their partners). Each group goes
// through those kernels' own functions, so both results are theirs bit for bit; each pass has
// its own arguments (codes, provisional scales, per-block maxima, non-finite record entry), and
// each its own scale pass afterwards.
constexpr int kBothWaysC = kTileC, kBothWaysR = 2 * kTileR;  // x's rows and columns per block
constexpr int kTileQuads = kTileC * kTileWords / 4;             // one transposed tile's 16-byte words

// The 16-group g (0..7) of row c_local of a staged both-ways block (`tiles`: its two tiles, one
// after the other), as the row-wise kernel's raw words: the tile words of one c hold x's BF16
// pairs as they lie in memory (column 2w low, 2w + 1 high), eight columns per 16-byte word.
__device__ __forceinline__ void staged_row_group(const uint4* tiles, int c_local, int g, RawGroup<__nv_bfloat16>& raw) {
  const uint4* half = tiles + (g / 4) * kTileQuads;
  raw.v[0] = half[swizzled_quad(c_local, 2 * (g % 4))];
  raw.v[1] = half[swizzled_quad(c_local, 2 * (g % 4) + 1)];
}

// The unrotated elements of a row-wise group whose rotated block was found non-finite, read again
// from the staged block (its words are unflipped), checked one by one: check_row_group_finite's
// work, kept out of the loop's registers likewise.
__device__ __noinline__ void check_staged_row_group_finite(const FusedArgs& a, const uint4* tiles, int c_local, int g_local,
                                                           std::int64_t r, std::int64_t g) {
  RawGroup<__nv_bfloat16> raw;
  staged_row_group(tiles, c_local, g_local, raw);
  float y[kNvGroup];
  unpack_raw(raw, y);
  check_group_finite(a, y, r, g * kNvGroup);
}

// The transposed pass's work on one staged tile (c0, r0) for thread (pair, g_local): the 16-group
// g_local of output rows r0 + 2 pair and r0 + 2 pair + 1, read from the tile's words, through the
// pass of quantizer K. This is fused_tile_kernel's loop body, line for line; that kernel keeps its
// own copy, as a call compiles to other register allocations there (ptxas, scripts/ptxas-report.sh).
template <bool kAmaxPass, QuantizerKind K, int kRotation, class Tile>
__device__ __forceinline__ void quantize_tile(const FusedArgs& a, const Constants& k, const std::uint32_t* words,
                                              const FlipTable<kNvGroup>& flips, float factor, int pair, int g_local,
                                              std::int64_t c0, std::int64_t r0, RunningMax& run) {
  std::uint32_t w[kNvGroup];
#pragma unroll
  for (int j = 0; j < kNvGroup; ++j) w[j] = words[(kNvGroup * g_local + j) * kTileWords + (pair ^ (4 * g_local))];
  if constexpr (kRotation != 0) {
#pragma unroll
    for (int q = 0; q < kNvGroup / 4; ++q) {
      const uint4 m = flips.load(g_local, q);
      w[4 * q] ^= m.x, w[4 * q + 1] ^= m.y, w[4 * q + 2] ^= m.z, w[4 * q + 3] ^= m.w;
    }
  }
  const std::int64_t g = c0 / kNvGroup + g_local;
  // Unrolled, so that `half` is a constant in each copy: ptxas then needs fewer registers
  // (MS-EDEN + RHT-128 transposed 120 -> 109, its requant 113 -> 96) and 4/6 + RHT stops
  // spilling; with `unroll 1` each element's half was chosen at run time.
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const std::int64_t r = r0 + 2 * pair + half;
    const bool valid = r < a.rows && g < a.groups;
    float y[kNvGroup];
    tile_group_values<Tile>(w, half, factor, y);
    if constexpr (kRotation != 0) {
      mix_group<kRotation>(y, g_local);
      if (Tile::kCheckFinite && a.check_finite && valid && rotated_group_may_be_non_finite(y)) {
        float unrotated[kNvGroup];  // the sign flips leave finiteness as it was
        tile_group_values<Tile>(w, half, factor, unrotated);
        check_group_finite(a, unrotated, r, g * kNvGroup);
      }
    } else if (Tile::kCheckFinite && a.check_finite && valid) {
      check_group_finite(a, y, r, g * kNvGroup);
    }
    finish_group<kAmaxPass, K>(a, k, r, g, valid, y, run);
  }
}

// row: x row-wise ([x_rows][x_cols]); col: x^T, with by_row_tiles dividing by the blocks along x's
// columns (ceil(x_cols / kBothWaysR)). Both MS-EDEN g16, rotations of size kRotation.
template <int kRotation>
__global__ void __launch_bounds__(kFusedThreads, kFusedMinBlocks) fused_both_ways_kernel(FusedArgs row, FusedArgs col,
                                                                                        TransposedBf16Tile src) {
  wait_for_upstream_grids();  // launched as a dependent (launch_persistent)
  allow_downstream_launch();
  constexpr QuantizerKind K = QuantizerKind::ms_eden_g16;
  constexpr int kRawWords = static_cast<int>(sizeof(RawGroup<__nv_bfloat16>) / 4);
  constexpr int kRowSteps = kBothWaysC / (kFusedThreads / kGroupsPerItem);  // rows per item and block
  static_assert(kFusedThreads == 256 && kRowSteps == 4, "the row-wise walk below covers 128 rows with 8 warps");
  __shared__ uint4 tile[2 * kTileQuads];  // the two tiles, one after the other
  __shared__ FlipTable<kNvGroup> col_flips;   // on tile words, as in fused_tile_kernel
  __shared__ FlipTable<kRawWords> row_flips;  // on raw words, as in fused_rowwise_kernel
  const int lane = static_cast<int>(threadIdx.x & 31), g_local = lane & 7, warp = static_cast<int>(threadIdx.x / 32);
  // Read only after the loop's first __syncthreads().
  if constexpr (kRotation != 0) {
    col_flips.template fill<kRotation, TileWordLayout>(col.signs);
    row_flips.template fill<kRotation, RawLayout<__nv_bfloat16>>(row.signs);
  }
  const int pair = lane / 8 + 4 * warp;  // transposed: output rows r0 + 2 pair, + 1 of each half
  const int item = lane / kGroupsPerItem;
  const std::int64_t r_blocks = (col.rows + kBothWaysR - 1) / kBothWaysR;
  const std::int64_t tiles = r_blocks * ((row.rows + kBothWaysC - 1) / kBothWaysC);
  RunningMax run_row, run_col;
  const Constants k{1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 0};  // MS-EDEN g16 takes none
  TransposedBf16Tile::Regs regs[2];
  // (c0, r0) of block t; neighbours in r are neighbours in memory. The host guarantees
  // tiles < 2^32.
  const auto origin = [&](std::int64_t t) {
    const std::int64_t ct = col.by_row_tiles.divide(static_cast<std::uint32_t>(t));
    return std::pair<std::int64_t, std::int64_t>{ct * kBothWaysC, (t - ct * r_blocks) * kBothWaysR};
  };
  const auto fetch = [&](std::int64_t t) {
    const auto [c0, r0] = origin(t);
    src.fetch(c0, r0, regs[0]);
    src.fetch(c0, r0 + kTileR, regs[1]);
  };
  if (blockIdx.x < tiles) fetch(blockIdx.x);
  for (std::int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
    const auto [c0, r0] = origin(t);
    __syncthreads();  // the previous block has been read
    src.store(tile, regs[0]);
    src.store(tile + kTileQuads, regs[1]);
    __syncthreads();
    if (t + gridDim.x < tiles) fetch(t + gridDim.x);
#pragma unroll 1
    for (int h = 0; h < 2; ++h) {
      quantize_tile<false, K, kRotation, TransposedBf16Tile>(col, k, reinterpret_cast<const std::uint32_t*>(tile + h * kTileQuads),
                                                             col_flips, 1.0f, pair, g_local, c0, r0 + h * kTileR, run_col);
    }
    const std::int64_t g = r0 / kNvGroup + g_local;
#pragma unroll 1
    for (int step = 0; step < kRowSteps; ++step) {
      // A warp's four items take rows 16 apart, which lie under four different swizzles: its
      // 16-byte reads then spread over all 32 banks.
      const int c_local = 16 * item + 64 * (step / 2) + 8 * (step % 2) + warp;
      const std::int64_t r = c0 + c_local;
      const bool valid = r < row.rows && g < row.groups;
      RawGroup<__nv_bfloat16> raw;
      staged_row_group(tile, c_local, g_local, raw);
      if constexpr (kRotation != 0) {
#pragma unroll
        for (int q = 0; q < kRawWords / 4; ++q) raw.v[q] = xor4(raw.v[q], row_flips.load(g_local, q));
      }
      float y[kNvGroup];
      unpack_raw(raw, y);  // zeros for a group outside x
      // fused_rowwise_kernel's steps on a group.
      if constexpr (kRotation != 0) {
        mix_group<kRotation>(y, g_local);
        if (row.check_finite && valid && rotated_group_may_be_non_finite(y)) {
          check_staged_row_group_finite(row, tile, c_local, g_local, r, g);
        }
      } else if (row.check_finite && valid) {
        check_group_finite(row, y, r, g * kNvGroup);
      }
      finish_group<false, K>(row, k, r, g, valid, y, run_row);
    }
  }
  reduce_running_max(row, run_row);
  __syncthreads();  // reduce_running_max's shared maxima are read by thread 0 before they are reused
  reduce_running_max(col, run_col);
}

// ---- MS-EDEN canonical form, pass 2, and dequantization -----------------------------------

// One thread per eight groups of a row (one Philox call): t = M / 256, e_g = SR(c_g / t). A
// tensor below the tiny-amax threshold is all zeros on the CPU (codes 0, scales 0, t = 1):
// its codes are cleared here, which only that case pays for.
// The eight scales e_g = SR(c_g / t) of one whole Philox block of a row (corrected8: its eight
// provisional scales, 16-byte aligned): two 16-byte loads, then the Philox call, one 8-byte store
// of the E4M3 bytes to scales8, and the values in e (registers). A tiny tensor's are 0.
__device__ __forceinline__ void eden_block_scales(const float* corrected8, const RandomContext& random, std::uint32_t r,
                                                  std::uint32_t philox_block_in_row, float t, bool tiny,
                                                  std::uint8_t* scales8, float (&e)[8]) {
  const float4* c8 = reinterpret_cast<const float4*>(corrected8);
  const float4 lo = c8[0], hi = c8[1];
  const float cg[8] = {lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w};
  const PhiloxWords words = philox_block(random, r, philox_block_in_row);
  std::uint32_t packed[2] = {0, 0};
#pragma unroll
  for (int k = 0; k < 8; ++k) {
    e[k] = tiny ? 0.0f : ms_eden_g16_scale(cg[k], t, decision_bits(words, static_cast<unsigned>(k)));
    packed[k / 4] |= static_cast<std::uint32_t>(tiny ? 0 : e4m3_bits_of_grid_value(e[k])) << (8 * (k % 4));
  }
  *reinterpret_cast<uint2*>(scales8) = make_uint2(packed[0], packed[1]);
}

// The tensor amax and the maximum provisional scale of pass 1's per-block maxima: whether the
// tensor is tiny, and t. Every thread of the block calls it.
struct EdenTensorScale {
  bool tiny;
  float t;
};

__device__ __forceinline__ EdenTensorScale eden_tensor_scale(const PartialMax* partials, unsigned count) {
  const PartialMax m = block_reduce_partial_max(partials, count);
  const bool tiny = __uint_as_float(m.amax_bits) < kTinyAmax;
  return {tiny, tiny ? 1.0f : ms_eden_g16_tensor_scale(__uint_as_float(m.corrected_bits))};
}

__global__ void eden_g16_finish_kernel(const float* corrected, std::int64_t rows, std::int64_t groups,
                                       const PartialMax* partials, unsigned partial_count, RandomContext random,
                                       float* tensor_scale, std::uint8_t* scales, std::uint8_t* codes) {
  wait_for_upstream_grids();
  const auto [tiny, t] = eden_tensor_scale(partials, partial_count);
  const std::int64_t blocks_per_row = (groups + 7) / 8;
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i == 0) *tensor_scale = t;
  if (i >= rows * blocks_per_row) return;
  const std::int64_t r = i / blocks_per_row, g0 = (i - r * blocks_per_row) * 8;
  if (groups % 8 == 0 && !tiny) {  // whole, aligned Philox blocks
    const std::int64_t idx = r * groups + g0;
    float unused[8];
    eden_block_scales(corrected + idx, random, static_cast<std::uint32_t>(r), static_cast<std::uint32_t>(g0 / 8), t, false,
                      scales + idx, unused);
    return;
  }
  const PhiloxWords words = philox_block(random, static_cast<std::uint32_t>(r), static_cast<std::uint32_t>(g0 / 8));
  for (int k = 0; k < 8 && g0 + k < groups; ++k) {
    const std::int64_t idx = r * groups + g0 + k;
    if (tiny) {
      scales[idx] = 0;
      *reinterpret_cast<uint2*>(codes + idx * (kNvGroup / 2)) = make_uint2(0, 0);
    } else {
      scales[idx] = e4m3_bits_of_grid_value(ms_eden_g16_scale(corrected[idx], t, decision_bits(words, static_cast<unsigned>(k))));
    }
  }
}

// Pass 2 for an operand that an emulated GEMM reads next: the scale pass above and the
// dequantization below in one kernel (rows of whole 8-group Philox blocks, groups % 8 == 0).
// A block takes a chunk of kChunkGroups / 8 = 64 Philox blocks at a time: first one thread per
// Philox block computes its eight scales, as eden_g16_finish_kernel does, into shared memory;
// then the block dequantizes the chunk in the dequantization kernel's order (half a group per
// thread, consecutive lanes on consecutive halves). Chunks of 2048 groups (every thread
// computing scales) left the GPU mostly empty at the training shapes of a 124m or 1b model (a
// 8192 x 768 tensor is 192 such chunks for 132 SMs' 1,056 resident blocks).
constexpr int kFinishChunkGroups = kFusedThreads * 2;

__global__ void __launch_bounds__(kFusedThreads) eden_g16_finish_dequantize_kernel(
    const float* corrected, std::int64_t rows, std::int64_t groups, const PartialMax* partials, unsigned partial_count,
    RandomContext random, float* tensor_scale, std::uint8_t* scales, std::uint8_t* codes, __nv_bfloat16* out) {
  constexpr int kChunkGroups = kFinishChunkGroups;
  static_assert(kChunkGroups % kFusedThreads == 0 && kChunkGroups / 8 <= kFusedThreads, "a chunk's shape");
  constexpr int kUnitsPerThread = 2 * kChunkGroups / kFusedThreads;  // half-group code words
  wait_for_upstream_grids();  // launched as a dependent (launch_persistent)
  allow_downstream_launch();
  __shared__ float chunk_scales[kChunkGroups];
  const auto [tiny, t] = eden_tensor_scale(partials, partial_count);
  if (blockIdx.x == 0 && threadIdx.x == 0) *tensor_scale = t;
  const std::int64_t total = rows * groups, blocks_per_row = groups / 8;
  const std::int64_t chunks = (total + kChunkGroups - 1) / kChunkGroups;
  for (std::int64_t chunk = blockIdx.x; chunk < chunks; chunk += gridDim.x) {
    const std::int64_t first = chunk * kChunkGroups;
    const std::int64_t halves = 2 * std::min<std::int64_t>(kChunkGroups, total - first);
    // The chunk's code words are loaded first, so that their latency overlaps the Philox work.
    std::uint32_t c[kUnitsPerThread];
#pragma unroll
    for (int u = 0; u < kUnitsPerThread; ++u) {
      const std::int64_t j = threadIdx.x + u * kFusedThreads;
      c[u] = j < halves ? reinterpret_cast<const std::uint32_t*>(codes)[2 * first + j] : 0u;
    }
    const std::int64_t block = first / 8 + threadIdx.x;  // this thread's Philox block, if any
    if (threadIdx.x < kChunkGroups / 8 && block * 8 < total) {
      const std::int64_t r = block / blocks_per_row, g0 = (block - r * blocks_per_row) * 8;
      float e[8];
      eden_block_scales(corrected + block * 8, random, static_cast<std::uint32_t>(r), static_cast<std::uint32_t>(g0 / 8), t,
                        tiny, scales + block * 8, e);
#pragma unroll
      for (int k = 0; k < 8; ++k) chunk_scales[threadIdx.x * 8 + k] = e[k];
    }
    __syncthreads();
#pragma unroll
    for (int u = 0; u < kUnitsPerThread; ++u) {
      const std::int64_t j = threadIdx.x + u * kFusedThreads;
      if (j >= halves) break;
      const std::int64_t h = 2 * first + j;
      if (tiny) {  // the CPU's all-zero tensor (codes 0, scales 0, t = 1)
        c[u] = 0;
        reinterpret_cast<std::uint32_t*>(codes)[h] = 0;
      }
      std::uint32_t w[4];
      e2m1x8_times_scale_bf16(c[u], __float2bfloat162_rn(chunk_scales[j / 2]), w);  // an E4M3 value: exact in BF16
      reinterpret_cast<uint4*>(out)[h] = make_uint4(w[0], w[1], w[2], w[3]);
    }
    __syncthreads();  // the chunk's scales have been read
  }
}

// NVFP4 or MXFP4 -> BF16 (e2m1 x block scale, exact). The unit is eight codes (half an NVFP4
// group, a quarter of an MXFP4 one): 4 code bytes in, one 16-byte store of 8 BF16 out,
// consecutive lanes on consecutive units, so every load and store instruction of a warp covers
// one contiguous span (128 bytes of codes, 512 bytes of output). Each thread keeps four units
// in flight.
constexpr int kDequantUnroll = 4;

template <ElementFormat F>
__global__ void dequantize_bf16_kernel(const std::uint8_t* codes, const std::uint8_t* scales, std::int64_t units,
                                       __nv_bfloat16* out) {
  wait_for_upstream_grids();  // launched as a dependent (launch_persistent)
  allow_downstream_launch();
  constexpr int kUnitsPerGroup = F == ElementFormat::nvfp4 ? 2 : 4;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t base = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; base < units;
       base += stride * kDequantUnroll) {
    std::uint32_t c[kDequantUnroll];
    std::uint8_t sb[kDequantUnroll];
#pragma unroll
    for (int u = 0; u < kDequantUnroll; ++u) {
      const std::int64_t h = base + u * stride;
      c[u] = h < units ? reinterpret_cast<const std::uint32_t*>(codes)[h] : 0u;
      sb[u] = h < units ? scales[h / kUnitsPerGroup] : 0;
    }
#pragma unroll
    for (int u = 0; u < kDequantUnroll; ++u) {
      const std::int64_t h = base + u * stride;
      if (h >= units) break;
      std::uint32_t w[4];
      e2m1x8_times_scale_bf16(c[u], F == ElementFormat::nvfp4 ? e4m3_scale_bf16x2(sb[u]) : e8m0_scale_bf16x2(sb[u]), w);
      reinterpret_cast<uint4*>(out)[h] = make_uint4(w[0], w[1], w[2], w[3]);
    }
  }
}


// ---- Quartet I's backward: the trust mask, then the inverse rotation ---------------------

// g[r][c] <- (D H (M ⊙ g[r]) / sqrt(n))[c] per n-block, in place (g: [rows][cols], cols % 16 == 0
// and a multiple of n). One thread per 16 elements, eight lanes per 128 (the quantizers'
// layout), so the rotation is unrotate_group's; the whole warp runs every iteration (the
// shuffles need it), absent units with zeros. Rounded to g's type once, as on the CPU.
template <int kRotation, class T>
__global__ void __launch_bounds__(kFusedThreads) trust_mask_unrotate_fused_kernel(T* g, std::int64_t rows, std::int64_t cols,
                                                                                  std::int64_t mask_row_bytes,
                                                                                  const std::uint8_t* mask, SignBits signs) {
  wait_for_upstream_grids();  // launched as a dependent (launch_persistent)
  allow_downstream_launch();
  const std::int64_t units_per_row = cols / kNvGroup, units = rows * units_per_row;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t u = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; u - static_cast<int>(threadIdx.x & 31) < units;
       u += stride) {
    const bool valid = u < units;
    const std::int64_t r = valid ? u / units_per_row : 0, c0 = valid ? (u - r * units_per_row) * kNvGroup : 0;
    RawGroup<T> raw{};
    std::uint32_t trusted = 0;
    if (valid) {
      load_raw(g + r * cols + c0, raw);
      trusted = *reinterpret_cast<const std::uint16_t*>(mask + r * mask_row_bytes + c0 / 8);
    }
    float y[kNvGroup];
    unpack_raw(raw, y);
#pragma unroll
    for (int i = 0; i < kNvGroup; ++i) y[i] = ((trusted >> i) & 1u) ? y[i] : 0.0f;
    // u - lane is a multiple of 32 and a row has a multiple of n / 16 units: lane & 7 is the
    // unit's position in its rotation block, as in the quantizers.
    if constexpr (kRotation != 0) unrotate_group<kRotation>(y, signs, static_cast<int>(threadIdx.x & 7));
    if (!valid) continue;
    if constexpr (sizeof(T) == 2) {
      store_bf16_group(reinterpret_cast<__nv_bfloat16*>(g + r * cols + c0), y);
    } else {
      float4* out = reinterpret_cast<float4*>(g + r * cols + c0);
#pragma unroll
      for (int k = 0; k < 4; ++k) out[k] = make_float4(y[4 * k], y[4 * k + 1], y[4 * k + 2], y[4 * k + 3]);
    }
  }
}

}  // namespace
}  // namespace quartet::cuda

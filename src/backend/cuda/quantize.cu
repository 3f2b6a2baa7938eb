// Quantization (see quantize.h): the dispatch to the fused kernels (fused_quantize.cuh), and
// the reference path for everything else: prepare (pad, rotate, check finiteness), amax,
// tensor constants, one thread per quantization group calling the shared group functions;
// the requant / transpose / dequantize / tiled-scale / trust-mask helpers.
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <type_traits>
#include <vector>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/dependent_launch.cuh"
#include "backend/cuda/device_caps.h"
#include "backend/cuda/device_memory.h"
#include "backend/cuda/env_switch.h"
#include "backend/cuda/message.h"
#include "backend/cuda/device_real.cuh"
#include "backend/cuda/quantize.h"
#include "quartet/error.h"
#include "quartet/numerics/group_quantizers.h"
#include "quartet/numerics/philox.h"
#include "quartet/numerics/rht_block.h"

namespace quartet::cuda {

namespace {

constexpr int kThreads = 256;

unsigned blocks_for(std::int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

// The logical input: element (r, c) of x, or of x^T when transposed.
struct Input {
  const void* x;
  bool bf16;
  bool transpose;
  std::int64_t x_cols;
  std::int64_t rows, cols;

  __device__ float at(std::int64_t r, std::int64_t c) const {
    const std::int64_t i = transpose ? c * x_cols + r : r * x_cols + c;
    return bf16 ? __bfloat162float(static_cast<const __nv_bfloat16*>(x)[i]) : static_cast<const float*>(x)[i];
  }
};

struct RotationArgs {
  int size;
  float signs[kMaxRhtBlock];
};

RotationArgs rotation_args(const Rotation& r) {
  RotationArgs a{};
  a.size = r.size;
  for (int j = 0; j < kMaxRhtBlock; ++j) a.signs[j] = r.signs[static_cast<std::size_t>(j)];
  return a;
}

// Non-finite inputs are recorded on the device, not checked with a synchronisation per call:
// the key is (call sequence << 40) | element index, so atomicMin keeps the first element of the
// first offending call. raise_pending_errors() turns it into a NonFiniteError.
__device__ unsigned long long g_first_non_finite = ~0ull;

__device__ void note_non_finite(float v, std::int64_t r, std::int64_t c, std::int64_t cols, unsigned long long seq) {
  if (!isfinite(v)) atomicMin(&g_first_non_finite, (seq << 40) | static_cast<unsigned long long>(r * cols + c));
}

// work[r][c] = input (zero-padded to padded_cols), one thread per element.
__global__ void prepare_plain_kernel(Input in, float* work, std::int64_t padded_cols, unsigned long long seq) {
  wait_for_upstream_grids();
  const std::int64_t n = in.rows * padded_cols;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t r = i / padded_cols, c = i % padded_cols;
    float v = 0.0f;
    if (c < in.cols) {
      v = in.at(r, c);
      note_non_finite(v, r, c, in.cols, seq);
    }
    work[i] = v;
  }
}

// One thread per (row, rotation block): y = H D x (rht_block.h), as on the CPU. The padding
// columns past cols were zeroed beforehand. (The fused kernels spread a block over lanes.)
__global__ void prepare_rotated_kernel(Input in, RotationArgs rot, float* work, std::int64_t padded_cols,
                                       unsigned long long seq) {
  wait_for_upstream_grids();
  const std::int64_t blocks_per_row = in.cols / rot.size;
  const std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (i >= in.rows * blocks_per_row) return;
  const std::int64_t r = i / blocks_per_row, c0 = (i % blocks_per_row) * rot.size;
  float x[kMaxRhtBlock];
  for (int j = 0; j < rot.size; ++j) {
    x[j] = in.at(r, c0 + j);
    note_non_finite(x[j], r, c0 + j, in.cols, seq);
  }
  rht_forward_block(x, rot.signs, rot.size, work + r * padded_cols + c0);
}

__global__ void amax_kernel(const float* work, std::int64_t n, unsigned* amax_bits) {
  wait_for_upstream_grids();
  float m = 0.0f;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    m = fmax2(m, fabs_bits(work[i]));
  }
  for (int off = 16; off > 0; off /= 2) m = fmax2(m, __shfl_xor_sync(0xFFFFFFFFu, m, off));
  if ((threadIdx.x & 31) == 0) atomicMax(amax_bits, __float_as_uint(m));  // non-negative floats order as uints
}

// Where the group kernels read their input: the zero-padded FP32 work matrix, or directly the
// row-major input when it needs neither rotation, transposition nor padding (ld = columns).
struct GroupSource {
  const float* work;
  const void* x;
  bool bf16;
  std::int64_t ld;

  template <int N>
  __device__ void load(std::int64_t r, std::int64_t c0, float* y) const {
    const std::int64_t base = r * ld + c0;
    if (work) {
      const float4* p = reinterpret_cast<const float4*>(work + base);
      for (int i = 0; i < N / 4; ++i) {
        const float4 q = p[i];
        y[4 * i] = q.x, y[4 * i + 1] = q.y, y[4 * i + 2] = q.z, y[4 * i + 3] = q.w;
      }
    } else if (bf16) {
      const uint4* p = reinterpret_cast<const uint4*>(static_cast<const __nv_bfloat16*>(x) + base);
      for (int i = 0; i < N / 8; ++i) {
        const uint4 q = p[i];
        const std::uint32_t w[4] = {q.x, q.y, q.z, q.w};
        for (int k = 0; k < 4; ++k) {
          y[8 * i + 2 * k] = __uint_as_float(w[k] << 16);
          y[8 * i + 2 * k + 1] = __uint_as_float(w[k] & 0xFFFF0000u);
        }
      }
    } else {
      const float4* p = reinterpret_cast<const float4*>(static_cast<const float*>(x) + base);
      for (int i = 0; i < N / 4; ++i) {
        const float4 q = p[i];
        y[4 * i] = q.x, y[4 * i + 1] = q.y, y[4 * i + 2] = q.z, y[4 * i + 3] = q.w;
      }
    }
  }
};

// amax of the input read directly, with the non-finite check.
__global__ void amax_input_kernel(Input in, unsigned* amax_bits, unsigned long long seq) {
  wait_for_upstream_grids();
  float m = 0.0f;
  const std::int64_t n = in.rows * in.cols;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t r = i / in.cols, c = i % in.cols;
    const float v = in.at(r, c);
    note_non_finite(v, r, c, in.cols, seq);
    m = fmax2(m, fabs_bits(v));
  }
  for (int off = 16; off > 0; off /= 2) m = fmax2(m, __shfl_xor_sync(0xFFFFFFFFu, m, off));
  if ((threadIdx.x & 31) == 0) atomicMax(amax_bits, __float_as_uint(m));
}

// Per-tensor constants, computed by the same functions the CPU calls.
struct Constants {
  float t, k_enc, inv_t, k6, k4;
  int zero;  // an NVFP4 tensor below the tiny-amax threshold quantizes as zeros
};

struct ConstantsArgs {
  QuantizerKind kind;
  bool nvfp4;
  float val_max;    // V (or s for MS-EDEN)
  float t_divisor;  // MS-EDEN research form
};

// The constants of a tensor of amax `amax` under quantizer a.kind. The quantizing passes of the
// fused kernels compute them in every thread from the amax pass's result (one launch fewer per
// quantization than a separate one-thread kernel); the reference path's constants_kernel stores
// them once.
__device__ Constants tensor_constants(float amax, const ConstantsArgs& a) {
  Constants k{1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 0};
  if (a.nvfp4 && amax < kTinyAmax) {
    k.zero = 1;
    amax = 0.0f;
  }
  switch (a.kind) {
    case QuantizerKind::rtn:
    case QuantizerKind::square16:
    case QuantizerKind::sr: {
      const TwoLevelScale s = rtn_tensor_scale(amax, a.val_max);
      k.t = s.t;
      k.k_enc = s.k_enc;
      break;
    }
    case QuantizerKind::four_over_six: {
      const FourOverSixScale s = four_over_six_tensor_scale(amax);
      k.t = s.t;
      k.inv_t = s.inv_t;
      k.k6 = s.k6;
      k.k4 = s.k4;
      break;
    }
    case QuantizerKind::ms_eden_g128: {
      const EdenResearchScale s = ms_eden_g128_tensor_scale(amax, a.val_max, a.t_divisor);
      k.t = s.t;
      k.k_enc = s.k_enc;
      break;
    }
    case QuantizerKind::mxfp4_rtn:
    case QuantizerKind::mxfp4_sr: k.t = kMxBackwardTensorScale; break;
    default: break;  // ms_eden_g16 sets t after its first pass; QuEST has t = 1
  }
  return k;
}

__global__ void constants_kernel(const unsigned* amax_bits, ConstantsArgs a, Constants* out, float* tensor_scale) {
  wait_for_upstream_grids();
  const Constants k = tensor_constants(__uint_as_float(*amax_bits), a);
  *out = k;
  *tensor_scale = k.t;
}

template <int N>
__device__ void load_group(const GroupSource& source, std::int64_t r, std::int64_t c0, const Constants& k, float* y) {
  source.load<N>(r, c0, y);
  if (k.zero) {
    for (int i = 0; i < N; ++i) y[i] = 0.0f;
  }
}

template <int N>
__device__ void store_group_codes(std::uint8_t* codes, const std::uint8_t* c) {
  for (int i = 0; i < N / 2; ++i) codes[i] = static_cast<std::uint8_t>(c[2 * i] | (c[2 * i + 1] << 4));
}

struct NvGroupArgs {
  QuantizerKind kind;
  GroupSource source;
  std::int64_t rows, padded_cols, groups;
  const Constants* constants;
  RandomContext random;
  float eden_scale;
  const float* tile_amax;      // square16
  float* corrected;            // ms_eden_g16 pass 1
  unsigned* max_corrected;     // ms_eden_g16 pass 1
  std::uint8_t* codes;
  std::uint8_t* scales;
};

// One thread per NVFP4 group of 16: rtn, four_over_six, square16, sr, ms_eden_g16 (pass 1).
__global__ void nv_group_kernel(NvGroupArgs a) {
  wait_for_upstream_grids();
  const std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (i >= a.rows * a.groups) return;
  const std::int64_t r = i / a.groups, g = i % a.groups;
  const Constants k = *a.constants;
  float y[kNvGroup];
  load_group<kNvGroup>(a.source, r, g * kNvGroup, k, y);
  std::uint8_t codes[kNvGroup];
  float s = 1.0f;
  const TwoLevelScale two{k.t, k.k_enc};
  switch (a.kind) {
    case QuantizerKind::rtn: s = rtn_group(y, group_absmax<kNvGroup>(y), two, codes); break;
    case QuantizerKind::square16: s = rtn_group(y, a.tile_amax[(r / kNvGroup) * a.groups + g], two, codes); break;
    case QuantizerKind::four_over_six: s = four_over_six_group(y, FourOverSixScale{k.t, k.inv_t, k.k6, k.k4}, codes); break;
    case QuantizerKind::sr: {
      std::uint16_t bits[kNvGroup];
      random_decision_range(a.random, static_cast<std::uint32_t>(r), static_cast<std::uint32_t>(g * kNvGroup), kNvGroup, bits);
      s = sr_group(y, two, bits, codes);
      break;
    }
    case QuantizerKind::ms_eden_g16: {
      const float c = ms_eden_g16_group(y, a.eden_scale, codes);
      a.corrected[i] = c;
      atomicMax(a.max_corrected, __float_as_uint(c));
      break;
    }
    default: break;
  }
  store_group_codes<kNvGroup>(a.codes + r * (a.padded_cols / 2) + g * (kNvGroup / 2), codes);
  if (a.kind != QuantizerKind::ms_eden_g16) a.scales[i] = e4m3_bits_of_grid_value(s);
}

__global__ void tile_amax_kernel(GroupSource source, std::int64_t rows, std::int64_t padded_cols, std::int64_t groups,
                                 const Constants* constants, float* tile_amax) {
  wait_for_upstream_grids();
  const std::int64_t tile_rows = (rows + kNvGroup - 1) / kNvGroup;
  const std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (i >= tile_rows * groups) return;
  const std::int64_t tr = i / groups, g = i % groups;
  float m = 0.0f;
  if (!constants->zero) {
    for (std::int64_t r = tr * kNvGroup; r < rows && r < (tr + 1) * kNvGroup; ++r) {
      float y[kNvGroup];
      source.load<kNvGroup>(r, g * kNvGroup, y);
      m = fmax2(m, group_absmax<kNvGroup>(y));
    }
  }
  tile_amax[i] = m;
}

// MS-EDEN research form: one thread per 128-element block (8 groups, one correction).
__global__ void eden_g128_kernel(GroupSource source, std::int64_t rows, std::int64_t padded_cols, std::int64_t groups,
                                 const Constants* constants, RandomContext random, std::uint8_t* codes,
                                 std::uint8_t* scales) {
  wait_for_upstream_grids();
  const std::int64_t blocks = (groups + kEdenBlockGroups - 1) / kEdenBlockGroups;
  const std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (i >= rows * blocks) return;
  const std::int64_t r = i / blocks, g0 = (i % blocks) * kEdenBlockGroups;
  const Constants k = *constants;
  const EdenResearchScale ts{k.t, k.k_enc};
  const int in_block = static_cast<int>(groups - g0 < kEdenBlockGroups ? groups - g0 : kEdenBlockGroups);
  EdenPartialSums partials[kEdenBlockGroups] = {};
  float sigma[kEdenBlockGroups] = {};
  for (int j = 0; j < in_block; ++j) {
    float y[kNvGroup];
    std::uint8_t c[kNvGroup];
    load_group<kNvGroup>(source, r, (g0 + j) * kNvGroup, k, y);
    sigma[j] = ms_eden_g128_group(y, ts, c, &partials[j]);
    store_group_codes<kNvGroup>(codes + r * (padded_cols / 2) + (g0 + j) * (kNvGroup / 2), c);
  }
  const float correction = ms_eden_g128_correction(partials);
  std::uint16_t bits[kEdenBlockGroups];
  random_decision_range(random, static_cast<std::uint32_t>(r), static_cast<std::uint32_t>(g0), in_block, bits);
  for (int j = 0; j < in_block; ++j) {
    scales[r * groups + g0 + j] = e4m3_bits_of_grid_value(ms_eden_g128_scale(sigma[j], correction, bits[j]));
  }
}

// One thread per MXFP4 group of 32: QuEST (with trust mask) or the backward quantizer.
__global__ void mx_group_kernel(QuantizerKind kind, GroupSource source, std::int64_t rows, std::int64_t padded_cols,
                                std::int64_t groups, const Constants* constants, RandomContext random,
                                std::uint8_t* codes, std::uint8_t* scales, std::uint8_t* trust_mask) {
  wait_for_upstream_grids();
  const std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (i >= rows * groups) return;
  const std::int64_t r = i / groups, g = i % groups;
  float y[kMxGroup];
  load_group<kMxGroup>(source, r, g * kMxGroup, *constants, y);
  std::uint8_t c[kMxGroup];
  std::uint8_t scale;
  if (kind == QuantizerKind::mxfp4_quest) {
    std::uint32_t trust = 0;
    scale = quest_group(y, c, &trust);
    std::uint8_t* mask = trust_mask + r * (padded_cols / 8) + g * (kMxGroup / 8);
    for (int b = 0; b < 4; ++b) mask[b] = static_cast<std::uint8_t>(trust >> (8 * b));
  } else if (kind == QuantizerKind::mxfp4_sr) {
    std::uint16_t bits[kMxGroup];
    random_decision_range(random, static_cast<std::uint32_t>(r), static_cast<std::uint32_t>(g * kMxGroup), kMxGroup, bits);
    scale = mxfp4_backward_group(y, bits, c);
  } else {
    scale = mxfp4_backward_group(y, nullptr, c);
  }
  store_group_codes<kMxGroup>(codes + r * (padded_cols / 2) + g * (kMxGroup / 2), c);
  scales[i] = scale;
}

__device__ std::uint8_t code_at(const std::uint8_t* codes, std::int64_t padded_cols, std::int64_t r, std::int64_t c) {
  const std::uint8_t byte = codes[r * (padded_cols / 2) + c / 2];
  return (c % 2 == 0) ? (byte & 0x0Fu) : (byte >> 4);
}

__device__ float decode_scale(ElementFormat f, std::uint8_t b) { return f == ElementFormat::nvfp4 ? e4m3_decode(b) : e8m0_decode(b); }

// out[c][r] = (e2m1 * scale) * t for c < cols: the dequantized tensor, transposed.
__global__ void dequantize_transposed_kernel(const std::uint8_t* codes, const std::uint8_t* scales,
                                             const float* tensor_scale, ElementFormat format, std::int64_t rows,
                                             std::int64_t cols, std::int64_t padded_cols, float* out) {
  wait_for_upstream_grids();
  const std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (i >= rows * cols) return;
  const std::int64_t r = i / cols, c = i % cols;
  const int group = format == ElementFormat::nvfp4 ? kNvGroup : kMxGroup;
  const float s = decode_scale(format, scales[r * (padded_cols / group) + c / group]);
  out[c * rows + r] = fmul(fmul(e2m1_decode(code_at(codes, padded_cols, r, c)), s), *tensor_scale);
}

// Transpose of a 16x16-square-block tensor: out is [cols][round_up(rows, 16)].
__global__ void transpose_square_kernel(const std::uint8_t* codes, const std::uint8_t* scales, std::int64_t rows,
                                        std::int64_t padded_cols, std::int64_t out_rows, std::int64_t out_padded,
                                        std::uint8_t* out_codes, std::uint8_t* out_scales) {
  wait_for_upstream_grids();
  const std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  const std::int64_t bytes_per_row = out_padded / 2;
  if (i < out_rows * bytes_per_row) {  // one output byte: elements (r', 2j) and (r', 2j+1)
    const std::int64_t r = i / bytes_per_row, j = i % bytes_per_row;
    const std::uint8_t lo = 2 * j < rows ? code_at(codes, padded_cols, 2 * j, r) : 0;
    const std::uint8_t hi = 2 * j + 1 < rows ? code_at(codes, padded_cols, 2 * j + 1, r) : 0;
    out_codes[i] = static_cast<std::uint8_t>(lo | (hi << 4));
  }
  const std::int64_t out_groups = out_padded / kNvGroup, groups = padded_cols / kNvGroup;
  if (i < out_rows * out_groups) {
    const std::int64_t r = i / out_groups, g = i % out_groups;
    const std::int64_t src_row = g * kNvGroup < rows ? g * kNvGroup : rows - 1;
    out_scales[i] = scales[src_row * groups + r / kNvGroup];
  }
}

// One thread per (row, rotation block): mask by the trust bits, then D H (rht_block.h).
__global__ void trust_mask_unrotate_kernel(void* g, bool bf16, std::int64_t rows, std::int64_t cols,
                                           std::int64_t padded_cols, const std::uint8_t* mask, RotationArgs rot) {
  wait_for_upstream_grids();
  const int n = rot.size ? rot.size : 1;
  const std::int64_t blocks_per_row = cols / n;
  const std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (i >= rows * blocks_per_row) return;
  const std::int64_t r = i / blocks_per_row, c0 = (i % blocks_per_row) * n;
  float v[kMaxRhtBlock];
  for (int j = 0; j < n; ++j) {
    const std::int64_t c = c0 + j;
    const bool trusted = (mask[r * (padded_cols / 8) + c / 8] >> (c % 8)) & 1u;
    v[j] = trusted ? load_real(g, bf16, r * cols + c) : 0.0f;
  }
  if (rot.size) rht_inverse_block(v, rot.signs, n, v);
  for (int j = 0; j < n; ++j) store_real(g, bf16, r * cols + c0 + j, v[j]);
}

// Linear [rows][groups] scales to the 128x4-tiled layout, one thread per tiled byte (padding
// rows and groups get 0).
__global__ void tile_scales_kernel(const std::uint8_t* scales, std::int64_t rows, std::int64_t groups,
                                   std::int64_t padded_rows, std::int64_t padded_groups, std::uint8_t* out) {
  wait_for_upstream_grids();
  const std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (i >= padded_rows * padded_groups) return;
  const std::int64_t r = i / padded_groups, g = i % padded_groups;
  out[tiled_scale_offset(r, g, padded_groups)] = r < rows && g < groups ? scales[r * groups + g] : 0;
}

unsigned grid_stride_blocks(std::int64_t n) {
  const std::int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(b < 4096 ? (b > 0 ? b : 1) : 4096);
}

}  // namespace
}  // namespace quartet::cuda

// The fused kernels use the constants, the non-finite record and the group functions above.
#include "backend/cuda/fused_quantize.cuh"

namespace quartet::cuda {

namespace {

// The most blocks of kFusedThreads threads the current device holds at once: a bound on every
// persistent grid (resident_blocks), hence on the per-block maxima a pass writes. Per device,
// as a process may drive devices of different sizes.
unsigned max_resident_fused_blocks() {
  static std::map<int, unsigned> bound;
  int device = 0;
  QUARTET_CUDA_CHECK(cudaGetDevice(&device));
  auto it = bound.find(device);
  if (it == bound.end()) {
    const int sms = multiprocessors();
    int threads_per_sm = 0;
    QUARTET_CUDA_CHECK(cudaDeviceGetAttribute(&threads_per_sm, cudaDevAttrMaxThreadsPerMultiProcessor, device));
    it = bound.emplace(device, static_cast<unsigned>(sms * std::max(threads_per_sm / kFusedThreads, 1))).first;
  }
  return it->second;
}

// A persistent grid: as many blocks as fit on the current device at once, at most `work`, and
// never more than max_resident_fused_blocks.
template <class Kernel>
unsigned resident_blocks(Kernel kernel, std::int64_t work) {
  static std::map<std::pair<int, const void*>, std::int64_t> capacity;
  int device = 0;
  QUARTET_CUDA_CHECK(cudaGetDevice(&device));
  const std::pair<int, const void*> key{device, reinterpret_cast<const void*>(kernel)};
  auto it = capacity.find(key);
  if (it == capacity.end()) {
    int per_sm = 0;
    QUARTET_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kFusedThreads, 0));
    const std::int64_t blocks = std::int64_t{multiprocessors()} * (per_sm > 0 ? per_sm : 1);
    it = capacity.emplace(key, std::min<std::int64_t>(blocks, max_resident_fused_blocks())).first;
  }
  const std::int64_t cap = capped_blocks(it->second);
  return static_cast<unsigned>(std::max<std::int64_t>(1, std::min(work, cap)));
}

// The quantizers and rotations the fused kernels cover: every NVFP4 quantizer but square
// 16x16 blocks (which need a tile amax first and keep the reference path) with any rotation,
// and the MXFP4 ones with the rotations Quartet I uses (none or 32).
bool fused_kind(QuantizerKind kind, int rotation) {
  if (quantizer_format(kind) == ElementFormat::mxfp4) return rotation == 0 || rotation == 32;
  return kind != QuantizerKind::square16;
}

// Calls f with v as a compile-time constant (std::integral_constant) if v is one of Values; one
// kernel per constant keeps each kernel's registers to what its quantizer and rotation need.
template <auto... Values, class V, class F>
bool with_constant(V v, F&& f) {
  return ((v == Values && (f(std::integral_constant<decltype(Values), Values>{}), true)) || ...);
}

template <class F>
void with_rotation(int size, F&& f) {
  if (!with_constant<0, 16, 32, 128>(size, f)) throw Error(message("rotation size ", size, " has no fused kernel"));
}

// Calls f(kind, rotation) with both as compile-time constants, for the pairs fused_kind covers
// whose format a kernel takes (kNv, kMx): one kernel is instantiated per pair, no more.
template <bool kNv, bool kMx, class F>
void with_fused_kind_and_rotation(QuantizerKind kind, int rotation, F&& f) {
  using K = QuantizerKind;
  const bool mx = quantizer_format(kind) == ElementFormat::mxfp4;
  bool known = false;
  if constexpr (kNv) {
    if (!mx) known = with_constant<K::rtn, K::four_over_six, K::sr, K::ms_eden_g16, K::ms_eden_g128>(kind, [&](auto k) {
      with_rotation(rotation, [&](auto r) { f(k, r); });
    });
  }
  if constexpr (kMx) {
    if (mx) known = with_constant<K::mxfp4_quest, K::mxfp4_rtn, K::mxfp4_sr>(kind, [&](auto k) {
      if (!with_constant<0, 32>(rotation, [&](auto r) { f(k, r); })) {
        throw Error(message("rotation size ", rotation, " has no fused MXFP4 kernel"));
      }
    });
  }
  if (!known) throw Error(message("quantizer ", quantizer_name(kind), " has no fused kernel here"));
}

// A dependent launch (dependent_launch.cuh): every persistent kernel waits for the grids
// before it first thing. Returns the grid's size: a pass that writes per-block maxima writes
// this many.
template <class Kernel, class... Args>
unsigned launch_persistent(Kernel kernel, std::int64_t work_blocks, cudaStream_t stream, Args... args) {
  const unsigned blocks = resident_blocks(kernel, work_blocks);
  launch_dependent(kernel, blocks, kFusedThreads, 0, stream, args...);
  return blocks;
}

// One pass of the row-wise kernel: the amax pass (the same for every quantizer) or the
// quantizing pass of a.kind, for a.rotation. Returns the grid's size.
template <class T>
unsigned launch_rowwise(bool amax_pass, FusedArgs a, const void* x, cudaStream_t stream) {
  const std::int64_t items_per_row = (a.groups + kGroupsPerItem - 1) / kGroupsPerItem;
  const std::int64_t items = a.rows * items_per_row;
  // The kernel counts items (128-element spans) and a row's groups in 32 bits: 2^31 items would be
  // 550 GB of BF16, a row of 2^32 groups 128 GiB.
  if (items >= kMaxRowwiseItems || items_per_row * kGroupsPerItem > 0xFFFFFFFFll) {
    throw Error(message("quantize: a ", a.rows, " x ", a.groups * kNvGroup, " tensor has ", items,
                        " spans of 128 elements; the row-wise kernel takes fewer than ", kMaxRowwiseItems));
  }
  a.by_items_per_row = DivideU32::by(static_cast<std::uint32_t>(std::max<std::int64_t>(items_per_row, 1)));
  const std::int64_t blocks = (items + kFusedThreads / kGroupsPerItem - 1) / (kFusedThreads / kGroupsPerItem);
  const T* input = static_cast<const T*>(x);
  unsigned grid = 0;
  if (amax_pass) {
    with_rotation(a.rotation, [&](auto rot) {
      grid = launch_persistent(fused_rowwise_kernel<true, QuantizerKind::rtn, rot.value, T>, blocks, stream, a, input);
    });
    return grid;
  }
  with_fused_kind_and_rotation<true, true>(a.kind, a.rotation, [&](auto kind, auto rot) {
    grid = launch_persistent(fused_rowwise_kernel<false, kind.value, rot.value, T>, blocks, stream, a, input);
  });
  return grid;
}

// kNv, kMx: the formats of the quantizers this tile source is combined with. Returns the
// grid's size.
template <bool kNv, bool kMx, class Tile>
unsigned launch_tiles(bool amax_pass, FusedArgs a, const Tile& tile, cudaStream_t stream) {
  const std::int64_t row_tiles = (a.rows + kTileR - 1) / kTileR;
  const std::int64_t tiles = row_tiles * ((a.groups * kNvGroup + kTileC - 1) / kTileC);
  // The kernel divides tile indices in 32 bits: 2^32 tiles of 8192 elements would be 70 TB.
  if (tiles > 0xFFFFFFFFll) {
    throw Error(message("quantize: a ", a.rows, " x ", a.groups * kNvGroup, " tensor has ", tiles,
                        " tiles of 64 x 128 elements; the tile kernel takes fewer than 2^32"));
  }
  a.by_row_tiles = DivideU32::by(static_cast<std::uint32_t>(std::max<std::int64_t>(row_tiles, 1)));
  unsigned grid = 0;
  if (amax_pass) {
    if constexpr (kNv) {  // the MXFP4 quantizers have fixed tensor scales: no amax pass
      with_rotation(a.rotation, [&](auto rot) {
        grid = launch_persistent(fused_tile_kernel<true, QuantizerKind::rtn, rot.value, Tile>, tiles, stream, a, tile);
      });
      return grid;
    }
    throw Error("an MXFP4 quantizer has no amax pass");
  }
  with_fused_kind_and_rotation<kNv, kMx>(a.kind, a.rotation, [&](auto kind, auto rot) {
    grid = launch_persistent(fused_tile_kernel<false, kind.value, rot.value, Tile>, tiles, stream, a, tile);
  });
  return grid;
}

// MS-EDEN canonical form, pass 2 (after either path's pass 1): q's tensor scale and scales.
// partials: pass 1's maxima (the fused pass's per block; the reference path's one atomic pair).
void finish_eden_g16(DeviceQuantized& q, const float* corrected, const PartialMax* partials, unsigned partial_count,
                     const RandomContext& random, cudaStream_t stream) {
  const std::int64_t groups = q.padded_cols / kNvGroup;
  launch_dependent(eden_g16_finish_kernel, blocks_for(q.rows * ((groups + 7) / 8)), kThreads, 0, stream,
      corrected, q.rows, groups, partials, partial_count, random, ptr<float>(q.tensor_scale), ptr<std::uint8_t>(q.scales),
      ptr<std::uint8_t>(q.codes));
  QUARTET_CUDA_LAUNCHED();
}

// Room for q's BF16 copy (DeviceQuantized::dequantized).
__nv_bfloat16* allocate_dequantized(DeviceQuantized& q) {
  q.dequantized = device_alloc(static_cast<std::size_t>(q.rows * q.padded_cols) * sizeof(__nv_bfloat16));
  return ptr<__nv_bfloat16>(q.dequantized);
}

// q's codes, scales and tensor scale and a pass's per-block maxima (max_resident_fused_blocks
// of them) as one allocation: the stream-ordered allocator costs the host a few microseconds
// per call, and at small shapes a quantization was mostly that.
PartialMax* allocate_codes_scales_and_partials(DeviceQuantized& q) {
  const auto aligned = [](std::size_t bytes) { return (bytes + 255) / 256 * 256; };
  const std::size_t codes = aligned(q.code_bytes()), scales = aligned(q.scale_bytes());
  const std::shared_ptr<void> block =
      device_alloc(codes + scales + 256 + std::size_t{max_resident_fused_blocks()} * sizeof(PartialMax));
  char* const base = ptr<char>(block);
  q.codes = std::shared_ptr<void>(block, base);
  q.scales = std::shared_ptr<void>(block, base + codes);
  q.tensor_scale = std::shared_ptr<void>(block, base + codes + scales);
  return reinterpret_cast<PartialMax*>(base + codes + scales + 256);  // lives as long as q.codes
}


// The arguments of a fused pass over q (codes and scales allocated; partials: the per-block
// maxima beside them) that every pass shares; the caller adds what its pass needs.
FusedArgs fused_args(const DeviceQuantized& q, const QuantizerSpec& spec, const Rotation& rotation,
                     const RandomContext& random, bool check_finite, unsigned long long sequence, PartialMax* partials) {
  FusedArgs a;
  a.kind = spec.kind;
  a.rows = q.rows;
  a.groups = q.padded_cols / kNvGroup;
  a.rotation = rotation.size;
  a.signs = sign_bits(rotation);
  a.random = random;
  a.eden_scale = spec.val_max();
  a.codes = ptr<std::uint8_t>(q.codes);
  a.scales = ptr<std::uint8_t>(q.scales);
  a.logical_cols = q.cols;
  a.check_finite = check_finite;
  a.sequence = sequence;
  a.partial_max = partials;
  return a;
}

// Room for MS-EDEN g16's provisional scales c_g, one float per group of q.
std::shared_ptr<void> allocate_corrected(const DeviceQuantized& q) {
  return device_alloc(static_cast<std::size_t>(q.rows * (q.padded_cols / kNvGroup)) * sizeof(float));
}

// MS-EDEN g16's scale pass after a fused pass 1 (count: its grid's size, the per-block maxima in
// partials): fused with the dequantization into q's BF16 copy where one is asked for and the
// rows are whole Philox blocks, else the plain scale pass.
void finish_fused_eden_g16(DeviceQuantized& q, const float* corrected, const PartialMax* partials, unsigned count,
                           const RandomContext& random, bool emit_dequantized, cudaStream_t stream) {
  const std::int64_t groups = q.padded_cols / kNvGroup;
  if (emit_dequantized && groups % 8 == 0) {
    __nv_bfloat16* const dequantized = allocate_dequantized(q);
    launch_persistent(eden_g16_finish_dequantize_kernel, (q.rows * groups + kFinishChunkGroups - 1) / kFinishChunkGroups,
                      stream, corrected, q.rows, groups, partials, count, random, ptr<float>(q.tensor_scale),
                      ptr<std::uint8_t>(q.scales), ptr<std::uint8_t>(q.codes), dequantized);
  } else {
    finish_eden_g16(q, corrected, partials, count, random, stream);
  }
}

// Fills q (shape set, NVFP4) with the fused kernels: `launch(amax_pass, args)` starts one pass
// and returns its grid's size. MS-EDEN g16 needs one heavy pass and the small scale pass; the
// others an amax pass and the quantizing pass, which derives the tensor constants from the amax
// pass's per-block maxima itself (tensor_constants) and stores t. Nothing synchronises the host.
template <class Launch>
void run_fused(DeviceQuantized& q, const QuantizerSpec& spec, const Rotation& rotation, const RandomContext& random,
               bool check_finite, unsigned long long sequence, bool emit_dequantized, cudaStream_t stream, Launch launch) {
  PartialMax* const partials = allocate_codes_scales_and_partials(q);
  FusedArgs a = fused_args(q, spec, rotation, random, check_finite, sequence, partials);
  const ConstantsArgs ca{spec.kind, q.format == ElementFormat::nvfp4, spec.val_max(),
                         static_cast<float>(255.99 * (6.0 / (spec.clip * spec.headroom)))};
  if (q.format == ElementFormat::mxfp4) {
    // Fixed tensor scales (QuEST 1, the backward quantizer 1/3): one pass, which also checks
    // that the input is finite.
    if (spec.kind == QuantizerKind::mxfp4_quest) {
      q.trust_mask = device_alloc(static_cast<std::size_t>(q.rows * q.padded_cols / 8));
      a.trust_mask = ptr<std::uint8_t>(q.trust_mask);
    }
    if (emit_dequantized) a.dequantized = allocate_dequantized(q);
    a.partial_max = nullptr;
    a.tensor_partials = partials;  // none: amax 0, on which the MXFP4 constants do not depend
    a.tensor_partial_count = 0;
    a.constants_args = ca;
    a.tensor_scale = ptr<float>(q.tensor_scale);
    launch(false, a);
    return;
  }
  if (spec.kind == QuantizerKind::ms_eden_g16) {
    const std::shared_ptr<void> corrected = allocate_corrected(q);
    a.corrected = ptr<float>(corrected);
    const unsigned count = launch(false, a);  // at most max_resident_fused_blocks
    finish_fused_eden_g16(q, ptr<float>(corrected), partials, count, random, emit_dequantized, stream);
    return;  // the temporaries are released in stream order
  }
  if (emit_dequantized &&
      (spec.kind == QuantizerKind::rtn || spec.kind == QuantizerKind::four_over_six || spec.kind == QuantizerKind::sr)) {
    a.dequantized = allocate_dequantized(q);  // written by the quantizing pass
  }
  const unsigned count = launch(true, a);  // at most max_resident_fused_blocks
  a.check_finite = false;
  a.partial_max = nullptr;
  a.tensor_partials = partials;
  a.tensor_partial_count = count;
  a.constants_args = ca;
  a.tensor_scale = ptr<float>(q.tensor_scale);
  launch(false, a);
}

}  // namespace

namespace {

// Shapes of quantize calls whose non-finite inputs are still unchecked, by call sequence.
std::map<unsigned long long, std::pair<std::int64_t, std::int64_t>> g_pending_shapes;
unsigned long long g_next_sequence = 1;

}  // namespace

void raise_pending_errors() {
  if (g_pending_shapes.empty()) return;
  unsigned long long key = 0;
  QUARTET_CUDA_CHECK(cudaMemcpyFromSymbol(&key, g_first_non_finite, sizeof(key)));
  if (key == ~0ull) {
    g_pending_shapes.clear();
    return;
  }
  const unsigned long long reset = ~0ull;
  QUARTET_CUDA_CHECK(cudaMemcpyToSymbol(g_first_non_finite, &reset, sizeof(reset)));
  const std::string what = describe_non_finite_key(key);
  g_pending_shapes.clear();
  throw NonFiniteError(what);
}

unsigned long long* non_finite_record() {
  void* address = nullptr;
  QUARTET_CUDA_CHECK(cudaGetSymbolAddress(&address, g_first_non_finite));
  return static_cast<unsigned long long*>(address);
}

std::string describe_non_finite_key(unsigned long long key) {
  const auto it = g_pending_shapes.find(key >> 40);
  if (it == g_pending_shapes.end()) return "quantize: a non-finite input element (position unknown)";
  const std::int64_t index = static_cast<std::int64_t>(key & ((1ull << 40) - 1));
  const auto [rows, cols] = it->second;
  return message("quantize: input element (", index / cols, ", ", index % cols, ") of the ", rows, " x ", cols,
                 " tensor is not finite; quantizers need finite values");
}

namespace {

// The number of a quantize call in the non-finite record, its (rows, cols) kept for the message.
unsigned long long register_quantize_call(std::int64_t rows, std::int64_t cols) {
  // Callers that never check (benchmarks, inference loops) must not grow the record without
  // bound, nor let the 23-bit sequence wrap onto a stale entry: check every 2^16 calls.
  if (g_pending_shapes.size() >= (std::size_t{1} << 16)) raise_pending_errors();
  const unsigned long long seq = g_next_sequence++ & ((1ull << 23) - 1);
  g_pending_shapes[seq] = {rows, cols};
  return seq;
}

// An empty quantized tensor of `rows` x `cols` (the reduction) under spec and rotation.
DeviceQuantized quantized_shape(const QuantizerSpec& spec, std::int64_t rows, std::int64_t cols, const Rotation& rotation) {
  DeviceQuantized q;
  q.format = quantizer_format(spec.kind);
  q.rows = rows;
  q.cols = cols;
  q.padded_cols = round_up(cols, q.group());
  q.rotation_size = rotation.size;
  q.square_blocks = spec.kind == QuantizerKind::square16;
  return q;
}

}  // namespace

DeviceQuantized quantize(const void* x, DType dtype, std::int64_t x_rows, std::int64_t x_cols, bool transpose,
                         const QuantizerSpec& spec, const Rotation& rotation, const RandomContext& random,
                         cudaStream_t stream, bool emit_dequantized) {
  spec.validate();
  if (dtype != DType::f32 && dtype != DType::bf16) {
    throw Error(message("quantize on the GPU takes f32 or bf16 tensors, got ", dtype_name(dtype)));
  }
  const std::int64_t rows = transpose ? x_cols : x_rows, cols = transpose ? x_rows : x_cols;
  check_quantize_shape(rows, cols, rotation);
  if (rows * cols >= (std::int64_t{1} << 40)) throw Error("quantize: tensors above 2^40 elements are not supported");
  DeviceQuantized q = quantized_shape(spec, rows, cols, rotation);
  const std::int64_t groups = q.padded_cols / q.group();
  const unsigned long long seq = register_quantize_call(rows, cols);

  if (fused_kind(spec.kind, rotation.size) && !transpose && cols % q.group() == 0) {
    run_fused(q, spec, rotation, random, true, seq, emit_dequantized, stream, [&](bool amax_pass, const FusedArgs& a) {
      return dtype == DType::bf16 ? launch_rowwise<__nv_bfloat16>(amax_pass, a, x, stream)
                                  : launch_rowwise<float>(amax_pass, a, x, stream);
    });
    return q;
  }
  if (fused_kind(spec.kind, rotation.size) && transpose && dtype == DType::bf16 && x_cols % 8 == 0) {
    const TransposedBf16Tile tile{static_cast<const __nv_bfloat16*>(x), x_rows, x_cols};
    run_fused(q, spec, rotation, random, true, seq, emit_dequantized, stream,
              [&](bool amax_pass, const FusedArgs& a) { return launch_tiles<true, true>(amax_pass, a, tile, stream); });
    return q;
  }

  // The reference path: the remaining quantizers and layouts.
  const Input in{x, dtype == DType::bf16, transpose, x_cols, rows, cols};
  // The group kernels read a zero-padded FP32 matrix: the rotated input, or (transposed or
  // padded) the plain input. A row-major input whose width needs no padding is read directly.
  const bool direct = !rotation.size && !transpose && cols == q.padded_cols;
  std::shared_ptr<void> work;
  GroupSource source{nullptr, x, dtype == DType::bf16, q.padded_cols};
  auto scratch = device_alloc(64);  // [0]: amax bits, [4]: max corrected, [16..]: constants
  auto* amax_bits = reinterpret_cast<unsigned*>(ptr<char>(scratch));
  auto* max_corrected = reinterpret_cast<unsigned*>(ptr<char>(scratch) + 4);
  auto* constants = reinterpret_cast<Constants*>(ptr<char>(scratch) + 16);
  QUARTET_CUDA_CHECK(cudaMemsetAsync(scratch.get(), 0, 16, stream));
  if (direct) {
    launch_dependent(amax_input_kernel, grid_stride_blocks(rows * cols), kThreads, 0, stream, in, amax_bits, seq);
  } else {
    work = device_alloc(static_cast<std::size_t>(rows * q.padded_cols) * sizeof(float));
    source.work = ptr<float>(work);
    if (rotation.size) {
      QUARTET_CUDA_CHECK(cudaMemsetAsync(work.get(), 0, static_cast<std::size_t>(rows * q.padded_cols) * sizeof(float), stream));
      launch_dependent(prepare_rotated_kernel, blocks_for(rows * (cols / rotation.size)), kThreads, 0, stream,
          in, rotation_args(rotation), ptr<float>(work), q.padded_cols, seq);
    } else {
      launch_dependent(prepare_plain_kernel, grid_stride_blocks(rows * q.padded_cols), kThreads, 0, stream, in, ptr<float>(work),
                                                                                               q.padded_cols, seq);
    }
    QUARTET_CUDA_LAUNCHED();
    launch_dependent(amax_kernel, grid_stride_blocks(rows * q.padded_cols), kThreads, 0, stream, ptr<float>(work), rows * q.padded_cols, amax_bits);
  }
  QUARTET_CUDA_LAUNCHED();
  q.tensor_scale = device_alloc(sizeof(float));
  const ConstantsArgs ca{spec.kind, q.format == ElementFormat::nvfp4, spec.val_max(),
                         static_cast<float>(255.99 * (6.0 / (spec.clip * spec.headroom)))};
  launch_dependent(constants_kernel, 1, 1, 0, stream, amax_bits, ca, constants, ptr<float>(q.tensor_scale));
  QUARTET_CUDA_LAUNCHED();

  q.codes = device_alloc(q.code_bytes());
  q.scales = device_alloc(q.scale_bytes());
  if (q.format == ElementFormat::mxfp4) {
    if (spec.kind == QuantizerKind::mxfp4_quest) q.trust_mask = device_alloc(static_cast<std::size_t>(rows * q.padded_cols / 8));
    launch_dependent(mx_group_kernel, blocks_for(rows * groups), kThreads, 0, stream,
        spec.kind, source, rows, q.padded_cols, groups, constants, random, ptr<std::uint8_t>(q.codes),
        ptr<std::uint8_t>(q.scales), q.trust_mask ? ptr<std::uint8_t>(q.trust_mask) : nullptr);
    QUARTET_CUDA_LAUNCHED();
  } else if (spec.kind == QuantizerKind::ms_eden_g128) {
    launch_dependent(eden_g128_kernel, blocks_for(rows * ((groups + 7) / 8)), kThreads, 0, stream,
        source, rows, q.padded_cols, groups, constants, random, ptr<std::uint8_t>(q.codes), ptr<std::uint8_t>(q.scales));
    QUARTET_CUDA_LAUNCHED();
  } else {
    NvGroupArgs a{};
    a.kind = spec.kind;
    a.source = source;
    a.rows = rows;
    a.padded_cols = q.padded_cols;
    a.groups = groups;
    a.constants = constants;
    a.random = random;
    a.eden_scale = spec.val_max();
    a.codes = ptr<std::uint8_t>(q.codes);
    a.scales = ptr<std::uint8_t>(q.scales);
    std::shared_ptr<void> tiles, corrected;
    if (spec.kind == QuantizerKind::square16) {
      const std::int64_t tile_rows = (rows + kNvGroup - 1) / kNvGroup;
      tiles = device_alloc(static_cast<std::size_t>(tile_rows * groups) * sizeof(float));
      launch_dependent(tile_amax_kernel, blocks_for(tile_rows * groups), kThreads, 0, stream, source, rows, q.padded_cols, groups,
                                                                                constants, ptr<float>(tiles));
      QUARTET_CUDA_LAUNCHED();
      a.tile_amax = ptr<float>(tiles);
    }
    if (spec.kind == QuantizerKind::ms_eden_g16) {
      corrected = device_alloc(static_cast<std::size_t>(rows * groups) * sizeof(float));
      a.corrected = ptr<float>(corrected);
      a.max_corrected = max_corrected;
    }
    launch_dependent(nv_group_kernel, blocks_for(rows * groups), kThreads, 0, stream, a);
    QUARTET_CUDA_LAUNCHED();
    // The atomic pair at the scratch's start is one PartialMax.
    if (spec.kind == QuantizerKind::ms_eden_g16) {
      finish_eden_g16(q, ptr<float>(corrected), reinterpret_cast<const PartialMax*>(amax_bits), 1, random, stream);
    }
  }
  return q;  // temporaries are released in stream order (device_alloc uses the stream-ordered allocator)
}

namespace {

// Whether the one-pass kernel may take the pair: only when the environment variable
// QUARTET_QUANTIZE_BOTH_WAYS is "fused" (read at every call). The two calls are the default: on
// an H100 the kernel was no faster (docs/cuda.md, "Both ways from one read") and holds one more
// dY-sized buffer at the backward's peak; the bits are the same.
bool both_ways_kernel_allowed() { return !env_keeps_usual("QUARTET_QUANTIZE_BOTH_WAYS", "separate", "fused"); }

}  // namespace

// fused_both_ways_kernel takes: BF16, MS-EDEN g16 both ways, rotations of one size that both
// dimensions are multiples of, whole 16-groups along the rows (the row-wise pass reads no padding)
// and, of what quantize would reject, nothing (that is left to the two calls, which say what is
// wrong).
bool fuses_both_ways(DType dtype, std::int64_t x_rows, std::int64_t x_cols, const QuantizerSpec& row_spec,
                     const Rotation& row_rotation, const QuantizerSpec& col_spec, const Rotation& col_rotation) {
  const int n = row_rotation.size;
  if (!both_ways_kernel_allowed()) return false;
  if (dtype != DType::bf16 || row_spec.kind != QuantizerKind::ms_eden_g16 || col_spec.kind != QuantizerKind::ms_eden_g16 ||
      col_rotation.size != n || !is_supported_rotation_size(n)) {
    return false;
  }
  if (x_rows < 1 || x_cols < 1 || x_cols % kNvGroup != 0 || (n != 0 && (x_rows % n != 0 || x_cols % n != 0))) return false;
  if (x_rows >= static_cast<std::int64_t>(kRotationSignRow) || x_cols >= static_cast<std::int64_t>(kRotationSignRow)) {
    return false;
  }
  if (x_rows * x_cols >= (std::int64_t{1} << 40)) return false;
  if (x_rows * ((x_cols / kNvGroup + kGroupsPerItem - 1) / kGroupsPerItem) >= kMaxRowwiseItems) return false;
  const std::int64_t blocks = ((x_rows + kBothWaysC - 1) / kBothWaysC) * ((x_cols + kBothWaysR - 1) / kBothWaysR);
  return blocks <= 0xFFFFFFFFll;  // the kernel divides block indices in 32 bits
}


std::pair<DeviceQuantized, DeviceQuantized> quantize_both_ways(const void* x, DType dtype, std::int64_t x_rows,
                                                               std::int64_t x_cols, const QuantizerSpec& row_spec,
                                                               const Rotation& row_rotation, const RandomContext& row_random,
                                                               const QuantizerSpec& col_spec, const Rotation& col_rotation,
                                                               const RandomContext& col_random, cudaStream_t stream,
                                                               bool emit_dequantized) {
  if (!fuses_both_ways(dtype, x_rows, x_cols, row_spec, row_rotation, col_spec, col_rotation)) {
    DeviceQuantized rows =
        quantize(x, dtype, x_rows, x_cols, false, row_spec, row_rotation, row_random, stream, emit_dequantized);
    DeviceQuantized cols = quantize(x, dtype, x_rows, x_cols, true, col_spec, col_rotation, col_random, stream, emit_dequantized);
    return {std::move(rows), std::move(cols)};
  }
  row_spec.validate();
  col_spec.validate();
  DeviceQuantized rq = quantized_shape(row_spec, x_rows, x_cols, row_rotation);
  DeviceQuantized cq = quantized_shape(col_spec, x_cols, x_rows, col_rotation);
  // Two calls' entries in the non-finite record, in the two calls' order: each pass records
  // under its own, so the record ends as theirs would.
  const unsigned long long row_sequence = register_quantize_call(x_rows, x_cols);
  const unsigned long long col_sequence = register_quantize_call(x_cols, x_rows);
  PartialMax* const row_partials = allocate_codes_scales_and_partials(rq);
  PartialMax* const col_partials = allocate_codes_scales_and_partials(cq);
  const std::shared_ptr<void> row_corrected = allocate_corrected(rq), col_corrected = allocate_corrected(cq);
  FusedArgs ra = fused_args(rq, row_spec, row_rotation, row_random, true, row_sequence, row_partials);
  FusedArgs ca = fused_args(cq, col_spec, col_rotation, col_random, true, col_sequence, col_partials);
  ra.corrected = ptr<float>(row_corrected);
  ca.corrected = ptr<float>(col_corrected);
  const std::int64_t r_blocks = (x_cols + kBothWaysR - 1) / kBothWaysR;
  const std::int64_t blocks = r_blocks * ((x_rows + kBothWaysC - 1) / kBothWaysC);
  ca.by_row_tiles = DivideU32::by(static_cast<std::uint32_t>(r_blocks));
  const TransposedBf16Tile tile{static_cast<const __nv_bfloat16*>(x), x_rows, x_cols};
  unsigned grid = 0;  // at most max_resident_fused_blocks: both passes' per-block maxima
  with_rotation(row_rotation.size, [&](auto rot) {
    grid = launch_persistent(fused_both_ways_kernel<rot.value>, blocks, stream, ra, ca, tile);
  });
  finish_fused_eden_g16(rq, ptr<float>(row_corrected), row_partials, grid, row_random, emit_dequantized, stream);
  finish_fused_eden_g16(cq, ptr<float>(col_corrected), col_partials, grid, col_random, emit_dequantized, stream);
  return {std::move(rq), std::move(cq)};  // the provisional scales are released in stream order
}

DeviceQuantized requantize_transposed(const DeviceQuantized& q, const QuantizerSpec& spec, const Rotation& rotation,
                                      const RandomContext& random, cudaStream_t stream, bool emit_dequantized) {
  // The fused requant reads a tensor of the format it writes (the recipes' pairs: NVFP4 to
  // NVFP4, Quartet I's MXFP4 to MXFP4).
  const ElementFormat out_format = quantizer_format(spec.kind);
  if (q.format == out_format && fused_kind(spec.kind, rotation.size) && q.padded_cols % kTileR == 0) {
    spec.validate();
    check_quantize_shape(q.cols, q.rows, rotation);
    DeviceQuantized out;
    out.format = out_format;
    out.rows = q.cols;
    out.cols = q.rows;
    out.padded_cols = round_up(q.rows, format_group_size(out_format));
    out.rotation_size = rotation.size;
    const auto run = [&](const auto& tile) {
      constexpr bool kNv = std::decay_t<decltype(tile)>::kGroup == kNvGroup;
      run_fused(out, spec, rotation, random, false, 0, emit_dequantized, stream,
                [&](bool amax_pass, const FusedArgs& a) { return launch_tiles<kNv, !kNv>(amax_pass, a, tile, stream); });
    };
    const std::uint8_t* codes = ptr<std::uint8_t>(q.codes);
    const std::uint8_t* scales = ptr<std::uint8_t>(q.scales);
    if (q.format == ElementFormat::nvfp4) {
      run(RequantTile<ElementFormat::nvfp4>{codes, scales, ptr<float>(q.tensor_scale), q.rows, q.padded_cols});
    } else {
      run(RequantTile<ElementFormat::mxfp4>{codes, scales, ptr<float>(q.tensor_scale), q.rows, q.padded_cols});
    }
    return out;
  }
  auto values = device_alloc(static_cast<std::size_t>(q.rows * q.cols) * sizeof(float));
  launch_dependent(dequantize_transposed_kernel, blocks_for(q.rows * q.cols), kThreads, 0, stream,
      ptr<std::uint8_t>(q.codes), ptr<std::uint8_t>(q.scales), ptr<float>(q.tensor_scale), q.format, q.rows, q.cols,
      q.padded_cols, ptr<float>(values));
  QUARTET_CUDA_LAUNCHED();
  return quantize(values.get(), DType::f32, q.cols, q.rows, false, spec, rotation, random, stream, emit_dequantized);
}

DeviceQuantized transpose_square_blocks(const DeviceQuantized& q, cudaStream_t stream) {
  if (!q.square_blocks || q.format != ElementFormat::nvfp4) {
    throw Error("only NVFP4 tensors quantized with 16x16 square blocks can be transposed exactly");
  }
  if (q.rotation_size != 0) throw Error("a rotated tensor cannot be transposed: its rotation runs along the other dimension");
  DeviceQuantized t;
  t.format = q.format;
  t.rows = q.cols;
  t.cols = q.rows;
  t.padded_cols = round_up(q.rows, kNvGroup);
  t.square_blocks = true;
  t.tensor_scale = device_alloc(sizeof(float));
  QUARTET_CUDA_CHECK(cudaMemcpyAsync(t.tensor_scale.get(), q.tensor_scale.get(), sizeof(float), cudaMemcpyDeviceToDevice, stream));
  t.codes = device_alloc(t.code_bytes());
  t.scales = device_alloc(t.scale_bytes());
  launch_dependent(transpose_square_kernel, blocks_for(t.rows * t.padded_cols / 2), kThreads, 0, stream,
      ptr<std::uint8_t>(q.codes), ptr<std::uint8_t>(q.scales), q.rows, q.padded_cols, t.rows, t.padded_cols,
      ptr<std::uint8_t>(t.codes), ptr<std::uint8_t>(t.scales));
  QUARTET_CUDA_LAUNCHED();
  return t;
}

namespace {
std::uint64_t g_dequantization_passes = 0;
}  // namespace

std::uint64_t dequantization_passes() { return g_dequantization_passes; }

void dequantize_block_scaled_bf16(const DeviceQuantized& q, void* out, cudaStream_t stream) {
  ++g_dequantization_passes;
  const std::int64_t units = q.rows * q.padded_cols / 8;  // eight codes each
  const std::int64_t blocks = (units + kFusedThreads * kDequantUnroll - 1) / (kFusedThreads * kDequantUnroll);
  const auto kernel = q.format == ElementFormat::nvfp4 ? dequantize_bf16_kernel<ElementFormat::nvfp4>
                                                       : dequantize_bf16_kernel<ElementFormat::mxfp4>;
  launch_persistent(kernel, blocks, stream, ptr<std::uint8_t>(q.codes), ptr<std::uint8_t>(q.scales), units,
                    static_cast<__nv_bfloat16*>(out));
}

void apply_trust_mask_and_unrotate(void* g, DType dtype, const DeviceQuantized& q, const Rotation& rotation,
                                   cudaStream_t stream) {
  if (!q.trust_mask) throw Error("trust mask: the operand has none (only QuEST-quantized tensors do)");
  if (q.rotation_size != rotation.size) {
    throw Error(message("trust mask: the operand was rotated with size ", q.rotation_size, ", not ", rotation.size));
  }
  if (dtype != DType::f32 && dtype != DType::bf16) throw Error("trust mask: gradients must be f32 or bf16");
  const std::int64_t n = rotation.size ? rotation.size : 1;
  if (q.cols % std::max<std::int64_t>(n, kNvGroup) == 0) {
    const std::int64_t units = q.rows * q.cols / kNvGroup;
    const std::int64_t blocks = (units + kFusedThreads - 1) / kFusedThreads;
    with_rotation(rotation.size, [&](auto rot) {
      const auto* mask = ptr<std::uint8_t>(q.trust_mask);
      const std::int64_t mask_row_bytes = q.padded_cols / 8;
      if (dtype == DType::bf16) {
        launch_persistent(trust_mask_unrotate_fused_kernel<rot.value, __nv_bfloat16>, blocks, stream,
                          static_cast<__nv_bfloat16*>(g), q.rows, q.cols, mask_row_bytes, mask, sign_bits(rotation));
      } else {
        launch_persistent(trust_mask_unrotate_fused_kernel<rot.value, float>, blocks, stream, static_cast<float*>(g), q.rows,
                          q.cols, mask_row_bytes, mask, sign_bits(rotation));
      }
    });
    return;
  }
  launch_dependent(trust_mask_unrotate_kernel, blocks_for(q.rows * (q.cols / n)), kThreads, 0, stream,
      g, dtype == DType::bf16, q.rows, q.cols, q.padded_cols, ptr<std::uint8_t>(q.trust_mask), rotation_args(rotation));
  QUARTET_CUDA_LAUNCHED();
}

std::size_t tiled_scale_bytes(const DeviceQuantized& q) {
  return static_cast<std::size_t>(round_up(q.rows, 128) * round_up(q.padded_cols / q.group(), 4));
}

std::shared_ptr<void> tiled_scales(const DeviceQuantized& q, cudaStream_t stream) {
  if (q.format != ElementFormat::nvfp4) throw Error("tiled scales: only NVFP4 tensors feed the block-scaled FP4 GEMM");
  const std::int64_t groups = q.padded_cols / kNvGroup;
  const std::int64_t padded_rows = round_up(q.rows, 128), padded_groups = round_up(groups, 4);
  auto out = device_alloc(tiled_scale_bytes(q));
  launch_dependent(tile_scales_kernel, blocks_for(padded_rows * padded_groups), kThreads, 0, stream,
      ptr<std::uint8_t>(q.scales), q.rows, groups, padded_rows, padded_groups, ptr<std::uint8_t>(out));
  QUARTET_CUDA_LAUNCHED();
  return out;
}

QuantizedTensor download(const DeviceQuantized& q, ScaleLayout layout) {
  QuantizedTensor t = QuantizedTensor::zeros(q.format, q.rows, q.cols);
  t.square_blocks = q.square_blocks;
  t.rotation_size = q.rotation_size;
  QUARTET_CUDA_CHECK(cudaDeviceSynchronize());
  QUARTET_CUDA_CHECK(cudaMemcpy(t.codes.data(), q.codes.get(), q.code_bytes(), cudaMemcpyDeviceToHost));
  std::shared_ptr<void> scales = q.scales;
  if (layout == ScaleLayout::tiled) {
    scales = tiled_scales(q, nullptr);
    t.scale_layout = ScaleLayout::tiled;
    t.scales.assign(tiled_scale_bytes(q), 0);
  }
  QUARTET_CUDA_CHECK(cudaMemcpy(t.scales.data(), scales.get(), t.scales.size(), cudaMemcpyDeviceToHost));
  QUARTET_CUDA_CHECK(cudaMemcpy(&t.tensor_scale, q.tensor_scale.get(), sizeof(float), cudaMemcpyDeviceToHost));
  if (q.trust_mask) {
    t.trust_mask.resize(q.mask_bytes());
    QUARTET_CUDA_CHECK(cudaMemcpy(t.trust_mask.data(), q.trust_mask.get(), q.mask_bytes(), cudaMemcpyDeviceToHost));
  }
  return t;
}

}  // namespace quartet::cuda

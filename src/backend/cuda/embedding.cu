// Token embedding on the GPU (ops.h). Forward: a warp per row gathers the table row in 16-byte
// accesses. Backward, deterministic and without atomics: the positions are sorted by token with
// a stable device radix sort, then one warp per run of equal tokens (and per 256 columns) adds
// the run's gradient rows into the table's gradient in position order, starting from its
// current value: the CPU's additions in the CPU's order, hence the same bits.
#include <cub/device/device_radix_sort.cuh>
#include <cuda_bf16.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/dependent_launch.cuh"
#include "backend/cuda/device_errors.cuh"
#include "backend/cuda/device_errors.h"
#include "backend/cuda/device_memory.h"
#include "backend/cuda/device_real.cuh"
#include "backend/cuda/message.h"
#include "backend/cuda/ops.h"
#include "quartet/error.h"

namespace quartet::cuda {

namespace {

constexpr int kWarp = 32;
constexpr int kRowsPerBlock = 8;  // a warp per row (or per sorted position), 256 threads
constexpr int kVector = 8;        // elements per 16-byte BF16 access (two accesses for FP32)


// ---- forward ----

// A warp per output row; a token outside the table is recorded and its row written NaN, so
// that the step's loss cannot be finite.
template <bool kVectorised>
__global__ void __launch_bounds__(kWarp * kRowsPerBlock)
    embedding_forward_kernel(const std::int32_t* __restrict__ tokens, const void* __restrict__ table, bool table_bf16,
                             void* __restrict__ out, bool out_bf16, std::int64_t rows, std::int64_t cols,
                             std::int64_t vocab, unsigned long long* error_slot) {
  wait_for_upstream_grids();
  const std::int64_t row = blockIdx.x * static_cast<std::int64_t>(kRowsPerBlock) + threadIdx.y;
  if (row >= rows) return;
  const std::int32_t token = tokens[row];
  const bool valid = token >= 0 && token < vocab;
  if (!valid && threadIdx.x == 0) record_data_error(error_slot, row, token);
  const std::int64_t src = valid ? token * cols : 0, dst = row * cols;
  if constexpr (kVectorised) {
    for (std::int64_t j = threadIdx.x * static_cast<std::int64_t>(kVector); j < cols; j += kWarp * kVector) {
      float v[kVector];
      if (valid) {
        load8(table, table_bf16, src + j, v);
      } else {
#pragma unroll
        for (float& x : v) x = NAN;
      }
      store8(out, out_bf16, dst + j, v);
    }
  } else {
    for (std::int64_t j = threadIdx.x; j < cols; j += kWarp) {
      store_real(out, out_bf16, dst + j, valid ? load_real(table, table_bf16, src + j) : NAN);
    }
  }
}

// ---- backward ----

// Sort keys: the token, or `vocab` (sorting after every token, then skipped) for a token
// outside the table, which is recorded. Values: the positions, in order.
__global__ void sort_keys_kernel(const std::int32_t* __restrict__ tokens, std::int64_t rows, std::int64_t vocab,
                                 unsigned* __restrict__ keys, std::int32_t* __restrict__ positions,
                                 unsigned long long* error_slot) {
  wait_for_upstream_grids();
  const std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (i >= rows) return;
  const std::int32_t token = tokens[i];
  const bool valid = token >= 0 && token < vocab;
  if (!valid) record_data_error(error_slot, i, token);
  keys[i] = valid ? static_cast<unsigned>(token) : static_cast<unsigned>(vocab);
  positions[i] = static_cast<std::int32_t>(i);
}

// One warp per (sorted index, column chunk); only the warp whose index starts a run of equal
// tokens works. It reads the run's positions 32 at a time (a coalesced load and a ballot for
// where the run ends), then adds each position's gradient row, in position order (the sort is
// stable), to the table gradient's value in FP32. Lanes past the row's end take part in the
// shuffles only.
template <bool kVectorised>
__global__ void __launch_bounds__(kWarp * kRowsPerBlock)
    accumulate_runs_kernel(const unsigned* __restrict__ keys, const std::int32_t* __restrict__ positions,
                           std::int64_t rows, const void* __restrict__ dout, bool dout_bf16,
                           float* __restrict__ dtable, std::int64_t cols, unsigned skipped_key) {
  wait_for_upstream_grids();
  constexpr int kWidth = kVectorised ? kVector : 1;
  const std::int64_t start = blockIdx.x * static_cast<std::int64_t>(kRowsPerBlock) + threadIdx.y;
  if (start >= rows) return;
  const unsigned key = keys[start];
  if (key == skipped_key || (start > 0 && keys[start - 1] == key)) return;  // warp-uniform
  const std::int64_t col = (static_cast<std::int64_t>(blockIdx.y) * kWarp + threadIdx.x) * kWidth;
  const bool active = col < cols;
  float* const target = dtable + static_cast<std::int64_t>(key) * cols + col;
  float acc[kWidth];
  if (active) {
    if constexpr (kVectorised) {
      load8(target, false, 0, acc);
    } else {
      acc[0] = *target;
    }
  }
  for (std::int64_t batch = start; batch < rows; batch += kWarp) {
    const std::int64_t mine = batch + threadIdx.x;
    const bool same = mine < rows && keys[mine] == key;
    const std::int32_t my_position = same ? positions[mine] : 0;
    const unsigned in_run = __ballot_sync(~0u, same);  // a prefix of the lanes: the keys are sorted
    const int count = in_run == ~0u ? kWarp : __ffs(static_cast<int>(~in_run)) - 1;
#pragma unroll 4
    for (int b = 0; b < count; ++b) {
      const std::int64_t row = __shfl_sync(~0u, my_position, b);
      if (!active) continue;
      if constexpr (kVectorised) {
        float g[kVector];
        load8(dout, dout_bf16, row * cols + col, g);
#pragma unroll
        for (int e = 0; e < kVector; ++e) acc[e] = __fadd_rn(acc[e], g[e]);
      } else {
        acc[0] = __fadd_rn(acc[0], load_real(dout, dout_bf16, row * cols + col));
      }
    }
    if (count < kWarp) break;
  }
  if (active) {
    if constexpr (kVectorised) {
      store8(target, false, 0, acc);
    } else {
      *target = acc[0];
    }
  }
}

// ---- argument checks ----

void expect_real_matrix(const Tensor& t, const char* what) {
  if (!t.defined() || t.device() != Device::cuda) {
    throw Error(message(what, ": expected a GPU tensor, got ", t.defined() ? "a CPU tensor" : "none"));
  }
  if (t.ndim() != 2 || (t.dtype() != DType::f32 && t.dtype() != DType::bf16)) {
    throw Error(message(what, ": expected a 2-D f32 or bf16 tensor, got ", shape_string(t.shape()), " ",
                        dtype_name(t.dtype())));
  }
}

void expect_tokens(const Tensor& tokens, const char* what, std::int64_t rows) {
  tokens.expect(what, {rows}, DType::i32);
  if (tokens.device() != Device::cuda) throw Error(message(what, ": expected a GPU tensor, got a CPU tensor"));
  if (rows >= std::numeric_limits<std::int32_t>::max()) {
    throw Error(message(what, ": ", rows, " positions; at most 2^31 - 2 are supported"));
  }
}


std::size_t round_up_256(std::size_t bytes) { return (bytes + 255) / 256 * 256; }

}  // namespace

void embedding_forward(Tensor& out, const Tensor& tokens, const Tensor& table, cudaStream_t stream) {
  expect_real_matrix(table, "embedding table");
  expect_real_matrix(out, "embedding output");
  const std::int64_t rows = out.dim(0), cols = table.dim(1), vocab = table.dim(0);
  out.expect("embedding output", {rows, cols}, out.dtype());
  expect_tokens(tokens, "embedding tokens", rows);
  if (rows == 0) return;
  note_data_error_context(DataErrorKind::embedding_token, vocab);
  const bool vectorised = cols % kVector == 0 && aligned16(table.raw()) && aligned16(out.raw());
  const dim3 block(kWarp, kRowsPerBlock);
  const auto blocks = static_cast<unsigned>((rows + kRowsPerBlock - 1) / kRowsPerBlock);
  const auto* ids = static_cast<const std::int32_t*>(tokens.raw());
  unsigned long long* slot = data_error_slot(DataErrorKind::embedding_token);
  const bool table_bf16 = table.dtype() == DType::bf16, out_bf16 = out.dtype() == DType::bf16;
  if (vectorised) {
    launch_dependent(embedding_forward_kernel<true>, blocks, block, 0, stream, ids, table.raw(), table_bf16, out.raw(), out_bf16,
                                                                  rows, cols, vocab, slot);
  } else {
    launch_dependent(embedding_forward_kernel<false>, blocks, block, 0, stream, ids, table.raw(), table_bf16, out.raw(), out_bf16,
                                                                   rows, cols, vocab, slot);
  }
  QUARTET_CUDA_LAUNCHED();
}

void embedding_backward(Tensor& dtable, const Tensor& tokens, const Tensor& dout, cudaStream_t stream) {
  expect_real_matrix(dtable, "embedding backward table gradient");
  if (dtable.dtype() != DType::f32) {
    throw Error(message("embedding backward: the table gradient must be f32, got ", dtype_name(dtable.dtype())));
  }
  expect_real_matrix(dout, "embedding backward output gradient");
  const std::int64_t rows = dout.dim(0), cols = dtable.dim(1), vocab = dtable.dim(0);
  dout.expect("embedding backward output gradient", {rows, cols}, dout.dtype());
  expect_tokens(tokens, "embedding backward tokens", rows);
  if (rows == 0 || cols == 0) return;
  if (vocab >= std::numeric_limits<std::int32_t>::max()) {
    throw Error(message("embedding backward: a table of ", vocab, " rows; at most 2^31 - 2 are supported"));
  }
  note_data_error_context(DataErrorKind::embedding_backward_token, vocab);
  const bool vectorised = cols % kVector == 0 && aligned16(dtable.raw()) && aligned16(dout.raw());
  const std::int64_t chunk_cols = kWarp * (vectorised ? kVector : 1);
  const std::int64_t chunks = (cols + chunk_cols - 1) / chunk_cols;
  if (chunks > 65535) throw Error(message("embedding backward: rows of ", cols, " columns are too wide"));

  // Keys hold 0..vocab (vocab marks a bad token): only their low bits take part in the sort.
  const int key_bits = std::max(1, static_cast<int>(std::bit_width(static_cast<std::uint32_t>(vocab))));
  const int n = static_cast<int>(rows);
  std::size_t sort_bytes = 0;
  QUARTET_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, sort_bytes, static_cast<const unsigned*>(nullptr),
                                                     static_cast<unsigned*>(nullptr),
                                                     static_cast<const std::int32_t*>(nullptr),
                                                     static_cast<std::int32_t*>(nullptr), n, 0, key_bits, stream));
  // One allocation: keys and positions before and after the sort, then the sort's scratch.
  const std::size_t array_bytes = round_up_256(static_cast<std::size_t>(rows) * 4);
  auto scratch = device_alloc(4 * array_bytes + sort_bytes);
  char* base = ptr<char>(scratch);
  auto* keys = reinterpret_cast<unsigned*>(base);
  auto* sorted_keys = reinterpret_cast<unsigned*>(base + array_bytes);
  auto* positions = reinterpret_cast<std::int32_t*>(base + 2 * array_bytes);
  auto* sorted_positions = reinterpret_cast<std::int32_t*>(base + 3 * array_bytes);

  constexpr int kKeyThreads = 256;
  launch_dependent(sort_keys_kernel, static_cast<unsigned>((rows + kKeyThreads - 1) / kKeyThreads), kKeyThreads, 0, stream,
      static_cast<const std::int32_t*>(tokens.raw()), rows, vocab, keys, positions,
      data_error_slot(DataErrorKind::embedding_backward_token));
  QUARTET_CUDA_LAUNCHED();
  QUARTET_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(base + 4 * array_bytes, sort_bytes, keys, sorted_keys, positions,
                                                     sorted_positions, n, 0, key_bits, stream));

  const dim3 block(kWarp, kRowsPerBlock);
  const dim3 grid(static_cast<unsigned>((rows + kRowsPerBlock - 1) / kRowsPerBlock), static_cast<unsigned>(chunks));
  auto* grad = static_cast<float*>(dtable.raw());
  const bool dout_bf16 = dout.dtype() == DType::bf16;
  const auto skipped = static_cast<unsigned>(vocab);
  if (vectorised) {
    launch_dependent(accumulate_runs_kernel<true>, grid, block, 0, stream, sorted_keys, sorted_positions, rows, dout.raw(), dout_bf16,
                                                             grad, cols, skipped);
  } else {
    launch_dependent(accumulate_runs_kernel<false>, grid, block, 0, stream, sorted_keys, sorted_positions, rows, dout.raw(),
                                                              dout_bf16, grad, cols, skipped);
  }
  QUARTET_CUDA_LAUNCHED();
}

}  // namespace quartet::cuda

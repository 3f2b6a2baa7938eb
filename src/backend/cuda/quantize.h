// Quantization on the GPU: the quantizers of numerics.md as kernels that call the very group
// functions the CPU reference calls (include/quartet/numerics/group_quantizers.h), with the
// randomized Hadamard transform's FP32 operations in the CPU's order (rht_block.h). Given the
// same input, codes, scales and tensor scales are therefore identical bit for bit.
//
// The fused kernels (fused_quantize.cuh) handle the NVFP4 quantizers row-wise, transposed and
// from FP4 (requant); the reference kernels (one thread per group) the rest. docs/cuda.md.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include <cuda_runtime_api.h>

#include "quartet/backend/tensor.h"
#include "quartet/numerics/hadamard.h"
#include "quartet/numerics/philox.h"
#include "quartet/numerics/quantized_tensor.h"
#include "quartet/numerics/quantizer.h"

namespace quartet::cuda {

// A quantized tensor in device memory: linear scale layout, the tensor scale as a device FP32.
struct DeviceQuantized {
  ElementFormat format = ElementFormat::nvfp4;
  std::int64_t rows = 0, cols = 0, padded_cols = 0;
  int rotation_size = 0;
  bool square_blocks = false;
  std::shared_ptr<void> codes;        // uint8 [rows][padded_cols / 2]
  std::shared_ptr<void> scales;       // uint8 [rows][padded_cols / group]
  std::shared_ptr<void> tensor_scale; // float [1]
  std::shared_ptr<void> trust_mask;   // uint8 [rows][padded_cols / 8] or null
  // bf16 [rows][padded_cols], e2m1 x block scale, or null: written when asked to by a fused
  // quantizer whose block scales are final in its pass over the data (rtn, four_over_six, sr,
  // the MXFP4 ones) or
  // by MS-EDEN g16's scale pass (fused with the dequantization), so the
  // emulated GEMM that reads the operand next needs no dequantization pass; that GEMM takes it
  // (releases it), so a tensor kept for backward keeps only its codes and scales.
  mutable std::shared_ptr<void> dequantized;

  int group() const { return format_group_size(format); }
  std::size_t code_bytes() const { return static_cast<std::size_t>(rows * padded_cols / 2); }
  std::size_t scale_bytes() const { return static_cast<std::size_t>(rows * padded_cols / group()); }
  std::size_t mask_bytes() const { return trust_mask ? static_cast<std::size_t>(rows * padded_cols / 8) : 0; }
};

// x: a device matrix [x_rows, x_cols] of f32 or bf16 (row-major). With `transpose` its
// transpose is quantized (rows = x_cols), without materialising it. Throws NonFiniteError
// naming the first non-finite element, Error for shapes the rotation does not fit.
// With `emit_dequantized` the fused rtn, four_over_six, sr and MXFP4 kernels also fill
// `dequantized`, and
// so does MS-EDEN g16's scale pass (fused with the dequantization).
DeviceQuantized quantize(const void* x, DType dtype, std::int64_t x_rows, std::int64_t x_cols, bool transpose,
                         const QuantizerSpec& spec, const Rotation& rotation, const RandomContext& random,
                         cudaStream_t stream, bool emit_dequantized = false);

// quantize(x, ..., false, row_spec, ...) and quantize(x, ..., true, col_spec, ...), in that order
// and with the same results (non-finite records included), from one pass over x where one
// kernel covers the pair: a bf16 x quantized both ways with ms_eden_g16 under rotations of one
// size that both dimensions fit (fused_quantize.cuh, "both ways"). Anything else is the two calls.
std::pair<DeviceQuantized, DeviceQuantized> quantize_both_ways(const void* x, DType dtype, std::int64_t x_rows,
                                                               std::int64_t x_cols, const QuantizerSpec& row_spec,
                                                               const Rotation& row_rotation, const RandomContext& row_random,
                                                               const QuantizerSpec& col_spec, const Rotation& col_rotation,
                                                               const RandomContext& col_random, cudaStream_t stream,
                                                               bool emit_dequantized = false);
// Whether quantize_both_ways reads x once for these arguments (tests: that the fused path runs);
// false unless the environment variable QUARTET_QUANTIZE_BOTH_WAYS is "fused" (the two calls are the default).
bool fuses_both_ways(DType dtype, std::int64_t x_rows, std::int64_t x_cols, const QuantizerSpec& row_spec,
                     const Rotation& row_rotation, const QuantizerSpec& col_spec, const Rotation& col_rotation);

// Dequantize (values e2m1 * scale * t, in the tensor's rotated domain), transpose, and quantize
// again.
DeviceQuantized requantize_transposed(const DeviceQuantized& q, const QuantizerSpec& spec, const Rotation& rotation,
                                      const RandomContext& random, cudaStream_t stream, bool emit_dequantized = false);

DeviceQuantized transpose_square_blocks(const DeviceQuantized& q, cudaStream_t stream);

// out: bf16 [rows][padded_cols], e2m1 * block scale (exact in BF16), without t.
void dequantize_block_scaled_bf16(const DeviceQuantized& q, void* out, cudaStream_t stream);
// How many times the process has run dequantize_block_scaled_bf16 (tests: a GEMM whose operands
// came with their BF16 copies runs none).
std::uint64_t dequantization_passes();

// g (f32 or bf16 [rows][cols]) <- (g masked by q's trust mask) H^T along the rows.
void apply_trust_mask_and_unrotate(void* g, DType dtype, const DeviceQuantized& q, const Rotation& rotation,
                                   cudaStream_t stream);

// Throws NonFiniteError if a quantize call since the last check met a non-finite input (the
// kernels record it on the device instead of synchronising every call).
void raise_pending_errors();
// The device address of that record (~0 when clear), for kernels that decide on it (the
// optimizer step skips while it is set, and takes it into the step's status).
unsigned long long* non_finite_record();
// The message raise_pending_errors() would give for a record's key, without clearing anything.
std::string describe_non_finite_key(unsigned long long key);

// The scales of an NVFP4 tensor in the 128x4-tiled layout that block-scaled FP4 GEMMs read
// (numerics.md §2): uint8 [round_up(rows, 128) * round_up(groups, 4)], padding bytes 0.
std::shared_ptr<void> tiled_scales(const DeviceQuantized& q, cudaStream_t stream);
std::size_t tiled_scale_bytes(const DeviceQuantized& q);

// A host copy with the same layout as the CPU backend's (linear scales, or tiled).
QuantizedTensor download(const DeviceQuantized& q, ScaleLayout layout = ScaleLayout::linear);

}  // namespace quartet::cuda

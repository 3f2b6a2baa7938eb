// NVFP4 and MXFP4 tensors (numerics.md §2).
//
// A logical R x C tensor (C is the GEMM reduction dimension) is stored with C zero-padded to
// a multiple of the group size:
//   codes:  uint8 [R][Cp/2], element 2j in the low nibble, 2j+1 in the high nibble;
//   scales: one byte per group (E4M3 for NVFP4, E8M0 for MXFP4), either
//           linear [R][Cp/g], or
//           tiled for cuBLASLt/CUTLASS on Blackwell: R padded to 128, Cp/g padded to 4, the
//           scale of (r, g) at tiled_scale_offset(r, g, padded scale columns), padding bytes 0;
//   tensor_scale: FP32 t; value = e2m1(code) * scale * t.
// MXFP4 tensors quantized by QuEST also carry a trust mask: bit c % 8 of byte
// r * (Cp/8) + c / 8 is set when element (r, c) was not clipped.
#pragma once

#include <cstdint>
#include <vector>

#include "quartet/numerics/host_device.h"

namespace quartet {

enum class ElementFormat : std::uint8_t { nvfp4, mxfp4 };
enum class ScaleLayout : std::uint8_t { linear, tiled };

const char* format_name(ElementFormat format);
const char* layout_name(ScaleLayout layout);
int format_group_size(ElementFormat format);  // 16 or 32

std::int64_t round_up(std::int64_t value, std::int64_t multiple);

// Offset of the scale of row r, group g in the 128x4-tiled layout; padded_groups is the
// number of scale columns padded to a multiple of 4.
QUARTET_HD std::int64_t tiled_scale_offset(std::int64_t r, std::int64_t g, std::int64_t padded_groups) {
  return ((r / 128) * (padded_groups / 4) + g / 4) * 512 + (r % 32) * 16 + ((r / 32) % 4) * 4 + (g % 4);
}

struct QuantizedTensor {
  ElementFormat format = ElementFormat::nvfp4;
  ScaleLayout scale_layout = ScaleLayout::linear;
  std::int64_t rows = 0;
  std::int64_t cols = 0;
  float tensor_scale = 1.0f;
  std::vector<std::uint8_t> codes;
  std::vector<std::uint8_t> scales;
  std::vector<std::uint8_t> trust_mask;  // empty unless quantized by QuEST
  bool square_blocks = false;            // one scale per 16x16 tile (replicated per row)
  int rotation_size = 0;                 // the values live in this RHT's domain (0: none)

  // An all-zero tensor of the given shape: codes 0, linear block scales 1.0, t = 1.
  static QuantizedTensor zeros(ElementFormat format, std::int64_t rows, std::int64_t cols);

  int group_size() const { return format_group_size(format); }
  std::int64_t padded_cols() const { return round_up(cols, group_size()); }
  std::int64_t scale_cols() const { return padded_cols() / group_size(); }
  std::int64_t code_row_bytes() const { return padded_cols() / 2; }

  std::uint8_t code(std::int64_t r, std::int64_t c) const;
  void set_code(std::int64_t r, std::int64_t c, std::uint8_t code);
  std::uint8_t scale_byte(std::int64_t r, std::int64_t g) const;
  float scale_value(std::int64_t r, std::int64_t g) const;  // decoded E4M3 or E8M0
  bool trusted(std::int64_t r, std::int64_t c) const;      // true when there is no mask
  float value(std::int64_t r, std::int64_t c) const;       // e2m1 * scale * t

  // Throws Error when buffer sizes do not match the shape, format and layout.
  void validate() const;
};

// Pack unpacked 4-bit codes (one per byte, count even) two per byte, and back.
std::vector<std::uint8_t> pack_codes(const std::vector<std::uint8_t>& unpacked);
std::vector<std::uint8_t> unpack_codes(const std::vector<std::uint8_t>& packed);

// The same tensor with its scales in the other layout (a copy; values are unchanged).
QuantizedTensor with_scale_layout(const QuantizedTensor& tensor, ScaleLayout layout);

// The top-left rows x cols block of `tensor` as a tensor of its own: the same format, tensor
// scale and rotation, its codes, block scales (linear layout) and trust mask. A block never
// splits a scale group: cols is tensor.cols or a multiple of the group size. Throws Error for a
// block outside the tensor or one that splits a group. (A rotated tensor's block must also hold
// whole rotation blocks to be rotated back; dequantize_unrotated checks that.)
QuantizedTensor leading_block(const QuantizedTensor& tensor, std::int64_t rows, std::int64_t cols);

// rows x cols values e2m1 * scale * t, in the quantized (possibly rotated) domain.
std::vector<float> dequantize(const QuantizedTensor& tensor);

// rows x padded_cols values e2m1 * block scale, without t: exact in FP32 (and in BF16),
// what the GEMM multiplies before applying alpha = t_A * t_B.
std::vector<float> dequantize_block_scaled(const QuantizedTensor& tensor);

// The transpose of a tensor quantized with 16x16 square blocks: identical values, so the
// forward weight can be reused transposed in the backward pass.
QuantizedTensor transpose_square_blocks(const QuantizedTensor& tensor);

}  // namespace quartet

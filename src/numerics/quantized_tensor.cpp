#include "quartet/numerics/quantized_tensor.h"

#include <algorithm>

#include <fmt/format.h>

#include "quartet/error.h"
#include "quartet/numerics/e2m1.h"
#include "quartet/numerics/e4m3.h"
#include "quartet/numerics/e8m0.h"
#include "numerics/parallel.h"

namespace quartet {

const char* format_name(ElementFormat format) { return format == ElementFormat::nvfp4 ? "nvfp4" : "mxfp4"; }
const char* layout_name(ScaleLayout layout) { return layout == ScaleLayout::linear ? "linear" : "tiled"; }
int format_group_size(ElementFormat format) { return format == ElementFormat::nvfp4 ? 16 : 32; }

std::int64_t round_up(std::int64_t value, std::int64_t multiple) {
  return (value + multiple - 1) / multiple * multiple;
}

namespace {

std::uint8_t scale_one(ElementFormat format) {
  return format == ElementFormat::nvfp4 ? e4m3_encode_rne(1.0f) : kE8M0One;
}

float decode_scale(ElementFormat format, std::uint8_t byte) {
  return format == ElementFormat::nvfp4 ? e4m3_decode(byte) : e8m0_decode(byte);
}

std::int64_t tiled_rows(std::int64_t rows) { return round_up(rows, 128); }
std::int64_t tiled_groups(std::int64_t groups) { return round_up(groups, 4); }

std::int64_t scale_offset(const QuantizedTensor& t, std::int64_t r, std::int64_t g) {
  if (t.scale_layout == ScaleLayout::linear) return r * t.scale_cols() + g;
  return tiled_scale_offset(r, g, tiled_groups(t.scale_cols()));
}

void check_index(const QuantizedTensor& t, std::int64_t r, std::int64_t c) {
  if (r < 0 || r >= t.rows || c < 0 || c >= t.padded_cols()) {
    throw Error(fmt::format("element ({}, {}) is outside the {} x {} quantized tensor", r, c, t.rows, t.cols));
  }
}

}  // namespace

QuantizedTensor QuantizedTensor::zeros(ElementFormat format, std::int64_t rows, std::int64_t cols) {
  if (rows < 1 || cols < 1) {
    throw Error(fmt::format("a quantized tensor needs at least one row and one column, got {} x {}", rows, cols));
  }
  QuantizedTensor t;
  t.format = format;
  t.rows = rows;
  t.cols = cols;
  t.codes.assign(static_cast<std::size_t>(rows * t.code_row_bytes()), 0);
  t.scales.assign(static_cast<std::size_t>(rows * t.scale_cols()), scale_one(format));
  return t;
}

std::uint8_t QuantizedTensor::code(std::int64_t r, std::int64_t c) const {
  check_index(*this, r, c);
  const std::uint8_t byte = codes[static_cast<std::size_t>(r * code_row_bytes() + c / 2)];
  return (c % 2 == 0) ? (byte & 0x0Fu) : (byte >> 4);
}

void QuantizedTensor::set_code(std::int64_t r, std::int64_t c, std::uint8_t value) {
  check_index(*this, r, c);
  std::uint8_t& byte = codes[static_cast<std::size_t>(r * code_row_bytes() + c / 2)];
  byte = (c % 2 == 0) ? static_cast<std::uint8_t>((byte & 0xF0u) | (value & 0x0Fu))
                      : static_cast<std::uint8_t>((byte & 0x0Fu) | (value << 4));
}

std::uint8_t QuantizedTensor::scale_byte(std::int64_t r, std::int64_t g) const {
  if (r < 0 || r >= rows || g < 0 || g >= scale_cols()) {
    throw Error(fmt::format("scale ({}, {}) is outside the {} x {} scale grid", r, g, rows, scale_cols()));
  }
  return scales[static_cast<std::size_t>(scale_offset(*this, r, g))];
}

float QuantizedTensor::scale_value(std::int64_t r, std::int64_t g) const {
  return decode_scale(format, scale_byte(r, g));
}

bool QuantizedTensor::trusted(std::int64_t r, std::int64_t c) const {
  check_index(*this, r, c);
  if (trust_mask.empty()) return true;
  return (trust_mask[static_cast<std::size_t>(r * (padded_cols() / 8) + c / 8)] >> (c % 8)) & 1u;
}

float QuantizedTensor::value(std::int64_t r, std::int64_t c) const {
  return (e2m1_decode(code(r, c)) * scale_value(r, c / group_size())) * tensor_scale;
}

void QuantizedTensor::validate() const {
  if (rows < 1 || cols < 1) throw Error(fmt::format("quantized tensor has shape {} x {}", rows, cols));
  const auto expect = [](const char* what, std::size_t got, std::int64_t want) {
    if (got != static_cast<std::size_t>(want)) {
      throw Error(fmt::format("quantized tensor {} buffer holds {} bytes, expected {}", what, got, want));
    }
  };
  expect("code", codes.size(), rows * code_row_bytes());
  const std::int64_t scale_bytes = scale_layout == ScaleLayout::linear
                                       ? rows * scale_cols()
                                       : tiled_rows(rows) * tiled_groups(scale_cols());
  expect("scale", scales.size(), scale_bytes);
  if (!trust_mask.empty()) expect("trust mask", trust_mask.size(), rows * padded_cols() / 8);
  if (!(tensor_scale > 0.0f) || !(tensor_scale < 3.0e38f)) {
    throw Error(fmt::format("quantized tensor has tensor scale {}, expected a positive finite value", tensor_scale));
  }
}

std::vector<std::uint8_t> pack_codes(const std::vector<std::uint8_t>& unpacked) {
  if (unpacked.size() % 2 != 0) {
    throw Error(fmt::format("packing 4-bit codes needs an even count, got {}", unpacked.size()));
  }
  std::vector<std::uint8_t> packed(unpacked.size() / 2);
  for (std::size_t i = 0; i < packed.size(); ++i) {
    const std::uint8_t lo = unpacked[2 * i], hi = unpacked[2 * i + 1];
    if (lo > 15 || hi > 15) throw Error(fmt::format("code at {} does not fit in 4 bits", lo > 15 ? 2 * i : 2 * i + 1));
    packed[i] = static_cast<std::uint8_t>(lo | (hi << 4));
  }
  return packed;
}

std::vector<std::uint8_t> unpack_codes(const std::vector<std::uint8_t>& packed) {
  std::vector<std::uint8_t> unpacked(packed.size() * 2);
  for (std::size_t i = 0; i < packed.size(); ++i) {
    unpacked[2 * i] = packed[i] & 0x0Fu;
    unpacked[2 * i + 1] = packed[i] >> 4;
  }
  return unpacked;
}

QuantizedTensor with_scale_layout(const QuantizedTensor& tensor, ScaleLayout layout) {
  tensor.validate();
  QuantizedTensor out = tensor;
  if (layout == tensor.scale_layout) return out;
  out.scale_layout = layout;
  const std::int64_t groups = tensor.scale_cols();
  out.scales.assign(static_cast<std::size_t>(layout == ScaleLayout::linear
                                                 ? tensor.rows * groups
                                                 : tiled_rows(tensor.rows) * tiled_groups(groups)),
                    0);
  for (std::int64_t r = 0; r < tensor.rows; ++r) {
    for (std::int64_t g = 0; g < groups; ++g) {
      out.scales[static_cast<std::size_t>(scale_offset(out, r, g))] = tensor.scale_byte(r, g);
    }
  }
  return out;
}

QuantizedTensor leading_block(const QuantizedTensor& tensor, std::int64_t rows, std::int64_t cols) {
  if (rows < 1 || cols < 1 || rows > tensor.rows || cols > tensor.cols) {
    throw Error(fmt::format("leading_block: a {} x {} block of a {} x {} tensor", rows, cols, tensor.rows, tensor.cols));
  }
  if (cols != tensor.cols && cols % tensor.group_size() != 0) {
    throw Error(fmt::format("leading_block: {} columns would split a scale group of {}", cols, tensor.group_size()));
  }
  const QuantizedTensor src = with_scale_layout(tensor, ScaleLayout::linear);
  QuantizedTensor out;
  out.format = src.format;
  out.scale_layout = ScaleLayout::linear;
  out.rows = rows;
  out.cols = cols;
  out.tensor_scale = src.tensor_scale;
  out.square_blocks = src.square_blocks;
  out.rotation_size = src.rotation_size;
  // Per row: the block's leading bytes of the source row (codes two per byte, one scale per group,
  // trust bits eight per byte; padded_cols is a multiple of 16, so every slice is whole bytes).
  const auto take_rows = [rows](const std::vector<std::uint8_t>& from, std::int64_t from_row, std::int64_t to_row) {
    std::vector<std::uint8_t> to(static_cast<std::size_t>(rows * to_row));
    for (std::int64_t r = 0; r < rows; ++r) {
      std::copy_n(from.begin() + r * from_row, to_row, to.begin() + r * to_row);
    }
    return to;
  };
  out.codes = take_rows(src.codes, src.code_row_bytes(), out.code_row_bytes());
  out.scales = take_rows(src.scales, src.scale_cols(), out.scale_cols());
  if (!src.trust_mask.empty()) out.trust_mask = take_rows(src.trust_mask, src.padded_cols() / 8, out.padded_cols() / 8);
  out.validate();
  return out;
}

namespace {

// Fills rows x width values code * block scale, optionally times t.
std::vector<float> dequantize_impl(const QuantizedTensor& t, std::int64_t width, bool with_tensor_scale) {
  t.validate();
  std::vector<float> out(static_cast<std::size_t>(t.rows * width));
  const int group = t.group_size();
  const std::int64_t groups = (width + group - 1) / group;
#pragma omp parallel for schedule(static) if (worth_parallel(t.rows * width))
  for (std::int64_t r = 0; r < t.rows; ++r) {
    const std::uint8_t* code_row = t.codes.data() + r * t.code_row_bytes();
    float* out_row = out.data() + r * width;
    for (std::int64_t g = 0; g < groups; ++g) {
      // The 16 possible values of this group: one exact product per code, then lookups.
      const float block = decode_scale(t.format, t.scales[static_cast<std::size_t>(scale_offset(t, r, g))]);
      float lut[16];
      for (int code = 0; code < 16; ++code) {
        const float v = e2m1_decode(static_cast<std::uint8_t>(code)) * block;  // exact
        lut[code] = with_tensor_scale ? v * t.tensor_scale : v;
      }
      const std::int64_t begin = g * group, end = std::min<std::int64_t>(width, begin + group);
      for (std::int64_t c = begin; c < end; ++c) {
        const std::uint8_t byte = code_row[c / 2];
        out_row[c] = lut[(c % 2 == 0) ? (byte & 0x0Fu) : (byte >> 4)];
      }
    }
  }
  return out;
}

}  // namespace

std::vector<float> dequantize(const QuantizedTensor& tensor) { return dequantize_impl(tensor, tensor.cols, true); }

std::vector<float> dequantize_block_scaled(const QuantizedTensor& tensor) {
  return dequantize_impl(tensor, tensor.padded_cols(), false);
}

QuantizedTensor transpose_square_blocks(const QuantizedTensor& tensor) {
  tensor.validate();
  if (!tensor.square_blocks || tensor.format != ElementFormat::nvfp4) {
    throw Error("only NVFP4 tensors quantized with 16x16 square blocks can be transposed exactly");
  }
  if (tensor.rotation_size != 0) {
    throw Error("a rotated tensor cannot be transposed: its rotation runs along the other dimension");
  }
  const QuantizedTensor src = with_scale_layout(tensor, ScaleLayout::linear);
  QuantizedTensor out = QuantizedTensor::zeros(ElementFormat::nvfp4, tensor.cols, tensor.rows);
  out.square_blocks = true;
  out.tensor_scale = tensor.tensor_scale;
  for (std::int64_t r = 0; r < out.rows; ++r) {
    for (std::int64_t c = 0; c < out.cols; ++c) out.set_code(r, c, src.code(c, r));
    for (std::int64_t g = 0; g < out.scale_cols(); ++g) {
      // tile (row block g, column block r / 16) of the source
      const std::int64_t src_row = std::min<std::int64_t>(g * 16, src.rows - 1);
      out.scales[static_cast<std::size_t>(r * out.scale_cols() + g)] = src.scale_byte(src_row, r / 16);
    }
  }
  return with_scale_layout(out, tensor.scale_layout);
}

}  // namespace quartet

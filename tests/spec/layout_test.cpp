// Independent tests of the quantized-tensor layouts (numerics.md §2): code packing, the tiled
// scale layout consumed by cuBLASLt/CUTLASS, and zero padding of C to the group size.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <set>
#include <vector>

#include "quartet/error.h"
#include "quartet/numerics/quantized_tensor.h"
#include "quartet/numerics/quantizer.h"

namespace {

using quartet::QuantizedTensor;
using quartet::QuantizerKind;
using quartet::QuantizerSpec;
using quartet::Rotation;

constexpr double kE2M1[8] = {0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0};
double e2m1_value(std::uint8_t code) { return (code & 8u) ? -kE2M1[code & 7u] : kE2M1[code & 7u]; }
double e4m3_value(std::uint8_t b) {  // non-negative, finite codes only (scales)
  const unsigned e = (b >> 3) & 15u, m = b & 7u;
  return e == 0 ? std::ldexp(double(m), -9) : std::ldexp(1.0 + m / 8.0, int(e) - 7);
}

std::vector<float> gaussian(std::int64_t rows, std::int64_t cols, std::uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> x(static_cast<std::size_t>(rows * cols));
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c) x[r * cols + c] = d(gen) * std::exp2(float(r % 7) - 3.0f);
  return x;
}

QuantizedTensor quantize(const std::vector<float>& x, std::int64_t rows, std::int64_t cols, QuantizerKind kind) {
  return quartet::quantize(quartet::ConstMatrixView(x.data(), rows, cols), QuantizerSpec::defaults(kind),
                           Rotation::none(), {1u, 0u, 0u});
}

TEST(SpecLayout, TiledScaleOffsetHandComputed) {
  // ((r/128)(Cg/4) + g/4) 512 + (r%32) 16 + ((r/32)%4) 4 + (g%4)
  EXPECT_EQ(quartet::tiled_scale_offset(0, 0, 4), 0);
  EXPECT_EQ(quartet::tiled_scale_offset(0, 1, 4), 1);
  EXPECT_EQ(quartet::tiled_scale_offset(0, 3, 4), 3);
  EXPECT_EQ(quartet::tiled_scale_offset(1, 0, 4), 16);
  EXPECT_EQ(quartet::tiled_scale_offset(32, 0, 4), 4);
  EXPECT_EQ(quartet::tiled_scale_offset(31, 3, 4), 31 * 16 + 3);         // 499
  EXPECT_EQ(quartet::tiled_scale_offset(127, 3, 4), 511);                // last byte of the first tile
  EXPECT_EQ(quartet::tiled_scale_offset(0, 4, 8), 512);                  // next tile along C
  EXPECT_EQ(quartet::tiled_scale_offset(128, 0, 8), 1024);               // next tile along R
  EXPECT_EQ(quartet::tiled_scale_offset(200, 5, 8), 1536 + 128 + 8 + 1);  // 1673
  EXPECT_EQ(quartet::tiled_scale_offset(300, 9, 12), (2 * 3 + 2) * 512 + 12 * 16 + 1 * 4 + 1);  // 4293
}

TEST(SpecLayout, TiledOffsetsAreABijectionOntoThePaddedArray) {
  const std::int64_t rows = 256, cg = 8;
  std::set<std::int64_t> seen;
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t g = 0; g < cg; ++g) {
      const std::int64_t o = quartet::tiled_scale_offset(r, g, cg);
      ASSERT_GE(o, 0);
      ASSERT_LT(o, rows * cg);
      ASSERT_TRUE(seen.insert(o).second) << r << " " << g;
    }
}

TEST(SpecLayout, PackingLowNibbleFirst) {
  const std::vector<std::uint8_t> unpacked = {0x1, 0x2, 0xF, 0x8, 0x0, 0x7};
  const std::vector<std::uint8_t> packed = quartet::pack_codes(unpacked);
  EXPECT_EQ(packed, (std::vector<std::uint8_t>{0x21, 0x8F, 0x70}));
  EXPECT_EQ(quartet::unpack_codes(packed), unpacked);
}

TEST(SpecLayout, CodeAccessorsUseThePackedLayout) {
  QuantizedTensor q = QuantizedTensor::zeros(quartet::ElementFormat::nvfp4, 3, 40);
  EXPECT_EQ(q.padded_cols(), 48);
  EXPECT_EQ(q.scale_cols(), 3);
  EXPECT_EQ(q.code_row_bytes(), 24);
  ASSERT_EQ(q.codes.size(), 3u * 24u);
  ASSERT_EQ(q.scales.size(), 3u * 3u);
  EXPECT_EQ(q.tensor_scale, 1.0f);
  for (int r = 0; r < 3; ++r)
    for (int g = 0; g < 3; ++g) EXPECT_EQ(q.scale_value(r, g), 1.0f);
  q.set_code(1, 5, 0xB);
  q.set_code(1, 4, 0x3);
  q.set_code(2, 0, 0x9);
  EXPECT_EQ(q.codes[1 * 24 + 2], 0xB3);
  EXPECT_EQ(q.codes[2 * 24 + 0], 0x09);
  EXPECT_EQ(q.code(1, 5), 0xB);
  EXPECT_EQ(q.code(1, 4), 0x3);
  EXPECT_EQ(q.code(1, 6), 0x0);
  EXPECT_EQ(q.value(1, 5), -1.5f);  // code 0xB = -1.5, scale 1, t 1
  EXPECT_EQ(q.value(2, 0), -0.5f);
}

TEST(SpecLayout, QuantizedCodesArePackedLowNibbleFirst) {
  const std::int64_t rows = 5, cols = 64;
  const std::vector<float> x = gaussian(rows, cols, 3);
  const QuantizedTensor q = quantize(x, rows, cols, QuantizerKind::rtn);
  ASSERT_EQ(q.codes.size(), static_cast<std::size_t>(rows * cols / 2));
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t j = 0; j < cols / 2; ++j) {
      const std::uint8_t byte = q.codes[r * (cols / 2) + j];
      EXPECT_EQ(byte & 0xFu, q.code(r, 2 * j));
      EXPECT_EQ(byte >> 4, q.code(r, 2 * j + 1));
    }
  // And code(), scale_byte() and tensor_scale reproduce every dequantized value.
  const std::vector<float> d = quartet::dequantize(q);
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c) {
      const double want = e2m1_value(q.code(r, c)) * e4m3_value(q.scale_byte(r, c / 16)) * q.tensor_scale;
      EXPECT_NEAR(d[r * cols + c], want, std::ldexp(std::fabs(want), -22));
    }
}

TEST(SpecLayout, TiledScalesRoundTripAndPreserveValues) {
  const std::int64_t rows = 130, cols = 40;  // R pads to 256, C/16 = 3 pads to 4
  const std::vector<float> x = gaussian(rows, cols, 5);
  const QuantizedTensor lin = quantize(x, rows, cols, QuantizerKind::rtn);
  ASSERT_EQ(lin.scale_layout, quartet::ScaleLayout::linear);
  ASSERT_EQ(lin.scales.size(), static_cast<std::size_t>(rows * 3));
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t g = 0; g < 3; ++g) EXPECT_EQ(lin.scales[r * 3 + g], lin.scale_byte(r, g)) << "linear [R][C/16]";
  const QuantizedTensor tiled = quartet::with_scale_layout(lin, quartet::ScaleLayout::tiled);
  EXPECT_EQ(tiled.scale_layout, quartet::ScaleLayout::tiled);
  EXPECT_NO_THROW(tiled.validate());
  ASSERT_EQ(tiled.scales.size(), static_cast<std::size_t>(256 * 4));
  std::vector<bool> used(tiled.scales.size(), false);
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t g = 0; g < 3; ++g) {
      const std::int64_t o = quartet::tiled_scale_offset(r, g, 4);
      used[o] = true;
      EXPECT_EQ(tiled.scales[o], lin.scales[r * 3 + g]) << r << " " << g;
      EXPECT_EQ(tiled.scale_byte(r, g), lin.scale_byte(r, g));
      EXPECT_EQ(tiled.scale_value(r, g), lin.scale_value(r, g));
    }
  for (std::size_t i = 0; i < used.size(); ++i)
    if (!used[i]) {
      EXPECT_EQ(tiled.scales[i], 0) << "padding byte " << i;  // documented in quantized_tensor.h
    }
  EXPECT_EQ(tiled.codes, lin.codes);
  EXPECT_EQ(quartet::dequantize(tiled), quartet::dequantize(lin));
  const QuantizedTensor back = quartet::with_scale_layout(tiled, quartet::ScaleLayout::linear);
  EXPECT_EQ(back.scale_layout, quartet::ScaleLayout::linear);
  EXPECT_EQ(back.scales, lin.scales);
  EXPECT_EQ(quartet::dequantize(back), quartet::dequantize(lin));
}

TEST(SpecLayout, NvPaddingIsZeroAndDequantizeReturnsTheLogicalShape) {
  const std::int64_t rows = 3, cols = 40;  // padded to 48
  const std::vector<float> x = gaussian(rows, cols, 7);
  const QuantizedTensor q = quantize(x, rows, cols, QuantizerKind::rtn);
  EXPECT_EQ(q.cols, cols);
  EXPECT_EQ(q.padded_cols(), 48);
  ASSERT_EQ(q.codes.size(), static_cast<std::size_t>(rows * 24));
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = cols; c < 48; ++c) EXPECT_EQ(e2m1_value(q.code(r, c)), 0.0) << r << " " << c;
  const std::vector<float> d = quartet::dequantize(q);
  EXPECT_EQ(d.size(), static_cast<std::size_t>(rows * cols));
  // The block-scaled values (no t) cover the padded width, zeros in the padding, and are
  // exactly e2m1 * scale (numerics.md §1: every product is exact).
  const std::vector<float> b = quartet::dequantize_block_scaled(q);
  ASSERT_EQ(b.size(), static_cast<std::size_t>(rows * 48));
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < 48; ++c) {
      const double want = e2m1_value(q.code(r, c)) * e4m3_value(q.scale_byte(r, c / 16));
      EXPECT_EQ(b[r * 48 + c], want) << r << " " << c;
      if (c >= cols) {
        EXPECT_EQ(b[r * 48 + c], 0.0f);
      }
      if (c < cols) {
        EXPECT_NEAR(d[r * cols + c], want * q.tensor_scale, std::ldexp(std::fabs(want * q.tensor_scale), -22));
      }
    }
}

TEST(SpecLayout, MxPaddingIsZeroAndDequantizeReturnsTheLogicalShape) {
  const std::int64_t rows = 2, cols = 40;  // padded to 64
  const std::vector<float> x = gaussian(rows, cols, 8);
  const QuantizedTensor q = quantize(x, rows, cols, QuantizerKind::mxfp4_rtn);
  EXPECT_EQ(q.format, quartet::ElementFormat::mxfp4);
  EXPECT_EQ(q.padded_cols(), 64);
  EXPECT_EQ(q.scale_cols(), 2);
  ASSERT_EQ(q.codes.size(), static_cast<std::size_t>(rows * 32));
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = cols; c < 64; ++c) EXPECT_EQ(e2m1_value(q.code(r, c)), 0.0);
  EXPECT_EQ(quartet::dequantize(q).size(), static_cast<std::size_t>(rows * cols));
}

TEST(SpecLayout, ValidateRejectsInconsistentBuffers) {
  QuantizedTensor q = QuantizedTensor::zeros(quartet::ElementFormat::nvfp4, 4, 32);
  EXPECT_NO_THROW(q.validate());
  QuantizedTensor bad_codes = q;
  bad_codes.codes.pop_back();
  EXPECT_THROW(bad_codes.validate(), quartet::Error);
  QuantizedTensor bad_scales = q;
  bad_scales.scales.push_back(0x38);
  EXPECT_THROW(bad_scales.validate(), quartet::Error);
}

}  // namespace

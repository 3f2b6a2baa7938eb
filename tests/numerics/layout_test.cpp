#include <gtest/gtest.h>

#include <set>

#include "quartet/error.h"
#include "quartet/numerics/quantized_tensor.h"
#include "quartet/numerics/quantizer.h"
#include "support/test_support.h"

namespace quartet {
namespace {

TEST(Layout, PackingPutsEvenElementsInTheLowNibble) {
  const std::vector<std::uint8_t> unpacked = {0x1, 0x2, 0xF, 0x0, 0x8, 0x7};
  const std::vector<std::uint8_t> packed = pack_codes(unpacked);
  ASSERT_EQ(packed, (std::vector<std::uint8_t>{0x21, 0x0F, 0x78}));
  EXPECT_EQ(unpack_codes(packed), unpacked);
  EXPECT_THROW(pack_codes({1, 2, 3}), Error);
  EXPECT_THROW(pack_codes({1, 16}), Error);
}

// Hand-evaluated from numerics.md §2 (Cg = padded groups):
//   ((r/128)*(Cg/4) + g/4)*512 + (r%32)*16 + ((r/32)%4)*4 + (g%4)
TEST(Layout, TiledOffsetsMatchHandComputedPositions) {
  EXPECT_EQ(tiled_scale_offset(0, 0, 8), 0);
  EXPECT_EQ(tiled_scale_offset(0, 3, 8), 3);
  EXPECT_EQ(tiled_scale_offset(1, 0, 8), 16);
  EXPECT_EQ(tiled_scale_offset(32, 0, 8), 4);
  EXPECT_EQ(tiled_scale_offset(33, 5, 8), 512 + 16 + 4 + 1);   // g/4 = 1 -> next 512 block
  EXPECT_EQ(tiled_scale_offset(130, 2, 8), 2 * 512 + 2 * 16 + 2);  // r/128 = 1, Cg/4 = 2
  EXPECT_EQ(tiled_scale_offset(127, 7, 8), 512 + 31 * 16 + 3 * 4 + 3);
}

TEST(Layout, TiledOffsetsAreABijectionOverThePaddedGrid) {
  const std::int64_t rows = 256, groups = 12;
  std::set<std::int64_t> seen;
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t g = 0; g < groups; ++g) seen.insert(tiled_scale_offset(r, g, groups));
  EXPECT_EQ(static_cast<std::int64_t>(seen.size()), rows * groups);
  EXPECT_EQ(*seen.begin(), 0);
  EXPECT_EQ(*seen.rbegin(), rows * groups - 1);
}

class LayoutFormats : public ::testing::TestWithParam<QuantizerKind> {};

TEST_P(LayoutFormats, TiledLayoutRoundTripsAndKeepsValues) {
  const std::int64_t rows = 150, cols = 96;  // neither a multiple of the tile
  const std::vector<float> x = testing::gaussian_matrix(rows, cols, 4);
  const QuantizedTensor q = quantize(ConstMatrixView(x.data(), rows, cols), QuantizerSpec::defaults(GetParam()),
                                     Rotation::none(), RandomContext{1, 2, 3});
  const QuantizedTensor tiled = with_scale_layout(q, ScaleLayout::tiled);
  const std::int64_t padded_groups = round_up(q.scale_cols(), 4);
  EXPECT_EQ(static_cast<std::int64_t>(tiled.scales.size()), 256 * padded_groups);
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t g = 0; g < q.scale_cols(); ++g) {
      ASSERT_EQ(tiled.scales[static_cast<std::size_t>(tiled_scale_offset(r, g, padded_groups))],
                q.scales[static_cast<std::size_t>(r * q.scale_cols() + g)]);
    }
  // Padding bytes are zero.
  EXPECT_EQ(tiled.scales[static_cast<std::size_t>(tiled_scale_offset(200, 0, padded_groups))], 0);
  EXPECT_EQ(dequantize(tiled), dequantize(q));
  const QuantizedTensor back = with_scale_layout(tiled, ScaleLayout::linear);
  EXPECT_EQ(back.scales, q.scales);
  EXPECT_EQ(back.codes, q.codes);
}

INSTANTIATE_TEST_SUITE_P(Formats, LayoutFormats,
                         ::testing::Values(QuantizerKind::rtn, QuantizerKind::mxfp4_rtn),
                         [](const auto& param_info) { return std::string(quantizer_name(param_info.param)); });

// A leading block holds exactly the values (and QuEST's trust bits) of the tensor's top-left
// corner, from either scale layout; a block that splits a group or leaves the tensor is refused.
TEST(Layout, LeadingBlockKeepsTheCornersValues) {
  const std::int64_t rows = 150, cols = 200;  // 200: padded to 208 (NVFP4) and 224 (MXFP4)
  const std::vector<float> x = testing::gaussian_matrix(rows, cols, 5);
  for (QuantizerKind kind : {QuantizerKind::four_over_six, QuantizerKind::mxfp4_quest}) {
    SCOPED_TRACE(quantizer_name(kind));
    const QuantizedTensor q = quantize(ConstMatrixView(x.data(), rows, cols), QuantizerSpec::defaults(kind),
                                       Rotation::none(), RandomContext{1, 2, 3});
    ASSERT_EQ(q.trust_mask.empty(), kind != QuantizerKind::mxfp4_quest);
    const std::int64_t group = q.group_size();
    for (const QuantizedTensor& source : {q, with_scale_layout(q, ScaleLayout::tiled)}) {
      for (const auto& [r, c] : {std::pair{rows, cols}, std::pair<std::int64_t, std::int64_t>{37, 4 * group},
                                 std::pair<std::int64_t, std::int64_t>{1, group}, std::pair{rows, 2 * group}}) {
        SCOPED_TRACE(std::to_string(r) + " x " + std::to_string(c));
        const QuantizedTensor block = leading_block(source, r, c);
        ASSERT_EQ(block.rows, r);
        ASSERT_EQ(block.cols, c);
        EXPECT_EQ(block.scale_layout, ScaleLayout::linear);
        EXPECT_EQ(block.tensor_scale, q.tensor_scale);
        EXPECT_EQ(block.trust_mask.empty(), q.trust_mask.empty());
        const std::vector<float> values = dequantize(block), all = dequantize(q);
        for (std::int64_t i = 0; i < r; ++i) {
          for (std::int64_t j = 0; j < c; ++j) {
            ASSERT_EQ(values[static_cast<std::size_t>(i * c + j)], all[static_cast<std::size_t>(i * cols + j)]);
            ASSERT_EQ(block.trusted(i, j), q.trusted(i, j));
          }
        }
      }
    }
    EXPECT_THROW(leading_block(q, rows, group + 8), Error);  // splits a group
    EXPECT_THROW(leading_block(q, rows + 1, cols), Error);
    EXPECT_THROW(leading_block(q, 0, cols), Error);
    EXPECT_THROW(leading_block(q, rows, cols + group), Error);
  }
}

// What a block carries over besides the values: the rotation the values live in, and NVIDIA's
// square-block flag.
TEST(Layout, LeadingBlockKeepsRotationAndSquareBlocks) {
  const std::int64_t rows = 64, cols = 128;
  const std::vector<float> x = testing::gaussian_matrix(rows, cols, 6);
  const QuantizedTensor rotated = quantize(ConstMatrixView(x.data(), rows, cols), QuantizerSpec::defaults(QuantizerKind::rtn),
                                           Rotation::hadamard(16), RandomContext{1, 2, 3});
  ASSERT_EQ(rotated.rotation_size, 16);
  EXPECT_EQ(leading_block(rotated, 16, 32).rotation_size, 16);
  const QuantizedTensor square = quantize(ConstMatrixView(x.data(), rows, cols),
                                          QuantizerSpec::defaults(QuantizerKind::square16), Rotation::none(), {});
  ASSERT_TRUE(square.square_blocks);
  const QuantizedTensor block = leading_block(square, 32, 64);
  EXPECT_TRUE(block.square_blocks);
  EXPECT_EQ(dequantize(transpose_square_blocks(block)).size(), 32u * 64u);
}

TEST(Layout, AccessorsAgreeWithTheBuffers) {
  QuantizedTensor t = QuantizedTensor::zeros(ElementFormat::nvfp4, 2, 20);  // padded to 32
  EXPECT_EQ(t.padded_cols(), 32);
  EXPECT_EQ(t.codes.size(), 2u * 16u);
  EXPECT_EQ(t.scales.size(), 2u * 2u);
  EXPECT_EQ(t.scale_value(1, 1), 1.0f);
  t.set_code(1, 5, 0xB);  // -1.5
  EXPECT_EQ(t.codes[16 + 2], 0xB0);
  EXPECT_EQ(t.code(1, 5), 0xB);
  t.tensor_scale = 2.0f;
  EXPECT_EQ(t.value(1, 5), -3.0f);
  EXPECT_THROW(t.code(2, 0), Error);
  EXPECT_THROW(t.code(0, 32), Error);
  EXPECT_THROW(t.scale_byte(0, 2), Error);
  EXPECT_THROW(QuantizedTensor::zeros(ElementFormat::nvfp4, 0, 16), Error);
}

TEST(Layout, ValidateRejectsInconsistentBuffers) {
  QuantizedTensor t = QuantizedTensor::zeros(ElementFormat::mxfp4, 3, 64);
  EXPECT_NO_THROW(t.validate());
  QuantizedTensor short_codes = t;
  short_codes.codes.pop_back();
  EXPECT_THROW(short_codes.validate(), Error);
  QuantizedTensor bad_scale = t;
  bad_scale.tensor_scale = 0.0f;
  EXPECT_THROW(bad_scale.validate(), Error);
  QuantizedTensor wrong_layout = t;
  wrong_layout.scale_layout = ScaleLayout::tiled;  // buffer still linear-sized
  EXPECT_THROW(wrong_layout.validate(), Error);
  EXPECT_THROW(dequantize(short_codes), Error);
}

}  // namespace
}  // namespace quartet

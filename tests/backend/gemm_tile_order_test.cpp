// The order in which the NVFP4-operand GEMM's blocks take their tiles (gemm_tile_order.h),
// checked on the CPU: every tile exactly once, bands of the chosen width with a narrower last
// one, each band swept row by row, and the band width from the 12 MiB budget of B tiles.
#include "backend/cuda/gemm_tile_order.h"

#include <gtest/gtest.h>

#include <vector>

namespace quartet::cuda {
namespace {

TEST(GemmTileOrder, TakesEveryTileOnceBandByBandRowByRow) {
  for (const TileOrder order : {TileOrder{5, 7, 3}, TileOrder{4, 6, 6}, TileOrder{1, 9, 2}, TileOrder{3, 1, 1}, TileOrder{6, 5, 1}}) {
    std::vector<int> taken(static_cast<std::size_t>(order.count()), 0);
    for (std::int64_t i = 0; i < order.count(); ++i) {
      int row = -1, col = -1;
      order.at(i, row, col);
      ASSERT_TRUE(row >= 0 && row < order.rows && col >= 0 && col < order.cols) << i << " -> " << row << ", " << col;
      ++taken[static_cast<std::size_t>(row * order.cols + col)];
      // By hand: the bands before this tile's hold band x rows tiles each; within its band the
      // tiles go across its width, then down.
      const int band = col / order.band, first = band * order.band;
      const int width = std::min(order.band, order.cols - first);
      EXPECT_EQ(i, static_cast<std::int64_t>(band) * order.band * order.rows + static_cast<std::int64_t>(row) * width + (col - first))
          << order.rows << "x" << order.cols << " band " << order.band;
    }
    for (int t : taken) EXPECT_EQ(t, 1);
  }
}

TEST(GemmTileOrder, BandsHoldAtMostTwelveMebibytesOfB) {
  // 256 columns x k BF16 per tile column: 2 MiB at k 4096, so six to a band.
  EXPECT_EQ(tile_order(16384, 11008, 4096, 128, 256).band, 6);
  EXPECT_EQ(tile_order(16384, 11008, 4096, 128, 256).rows, 128);
  EXPECT_EQ(tile_order(16384, 11008, 4096, 128, 256).cols, 43);
  EXPECT_EQ(tile_order(16384, 4096, 11008, 128, 256).band, 2);  // 5.4 MiB a tile column
  EXPECT_EQ(tile_order(16384, 2304, 768, 128, 256).band, 9);    // all nine columns fit
  EXPECT_EQ(tile_order(100, 100, 1 << 20, 128, 256).band, 1);   // one column over the budget: one a band
  EXPECT_EQ(tile_order(129, 257, 64, 128, 128).rows, 2);
  EXPECT_EQ(tile_order(129, 257, 64, 128, 128).cols, 3);
}

}  // namespace
}  // namespace quartet::cuda

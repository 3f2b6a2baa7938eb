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

TEST(GemmTileOrder, SplitKFillsTheSmsWithRunsOfAtLeastEightKTilesNoneEmpty) {
  // 124m's weight gradients at 8192 tokens (128 k-tiles), 128 x 256 tiles, 132 SMs.
  EXPECT_EQ(split_k(18, 128, 132).splits, 7);  // 768 x 768: 6 x 3 tiles, 7 runs of 19 k-tiles (the last 14)
  EXPECT_EQ(split_k(18, 128, 132).k_tiles_per_split, 19);
  EXPECT_EQ(split_k(54, 128, 132).splits, 2);  // 2304 x 768: 18 x 3 tiles, two runs of 64
  EXPECT_EQ(split_k(54, 128, 132).k_tiles_per_split, 64);
  EXPECT_EQ(split_k(3, 128, 132).splits, 16);  // a 384 x 256 output: runs of 8 at least
  EXPECT_EQ(split_k(3, 128, 132).k_tiles_per_split, 8);
  EXPECT_EQ(split_k(132, 128, 132).splits, 1);  // a wave of tiles already
  EXPECT_EQ(split_k(5, 7, 132).splits, 1);     // too short to split
  for (std::int64_t tiles : {1, 2, 3, 17, 54, 131}) {
    for (int k_tiles : {1, 8, 15, 16, 17, 100, 128, 1000}) {
      const SplitK s = split_k(tiles, k_tiles, 132);
      ASSERT_GE(s.splits, 1);
      EXPECT_LE(s.splits * tiles, std::max<std::int64_t>(132, tiles)) << tiles << " tiles, " << k_tiles << " k-tiles";
      EXPECT_GE(static_cast<std::int64_t>(s.splits) * s.k_tiles_per_split, k_tiles);        // every k-tile in a run
      EXPECT_LT(static_cast<std::int64_t>(s.splits - 1) * s.k_tiles_per_split, k_tiles);    // and no run empty
      if (s.splits > 1) EXPECT_GE(s.k_tiles_per_split, 8) << tiles << " tiles, " << k_tiles << " k-tiles";
    }
  }
}

}  // namespace
}  // namespace quartet::cuda

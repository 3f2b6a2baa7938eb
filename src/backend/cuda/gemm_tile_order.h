// The order in which a GEMM's blocks take the tiles of out (gemm_fp4_operand.cu): bands of
// `band` tile columns, each band swept a tile row at a time, so that the blocks running at once
// share a band's B tiles, kept in L2 while every row of A passes under them, instead of each wave
// of blocks streaming the whole of B from memory. Host and device code alike, so that the CPU can
// check the order.
#pragma once

#include <algorithm>
#include <cstdint>

#include "quartet/numerics/host_device.h"

namespace quartet::cuda {

struct TileOrder {
  int rows, cols, band;  // tiles of out down and across; tile columns per band

  QUARTET_HD std::int64_t count() const { return static_cast<std::int64_t>(rows) * cols; }

  // The i-th tile taken (0 <= i < count()): its row and column among the tiles.
  QUARTET_HD void at(std::int64_t i, int& row, int& col) const {
    const std::int64_t per_band = static_cast<std::int64_t>(band) * rows;
    const int first = static_cast<int>(i / per_band) * band;
    const int width = cols - first < band ? cols - first : band;  // the last band may be narrower
    const std::int64_t within = i % per_band;
    row = static_cast<int>(within / width);
    col = first + static_cast<int>(within % width);
  }
};

// Tiles of tile_rows x tile_cols over an m x n output, in bands whose B tiles (tile_cols x k
// BF16 each) come to at most 12 MiB, a quarter of the H100's L2, so that a band stays there
// beside the rows of A and out in flight.
inline TileOrder tile_order(std::int64_t m, std::int64_t n, std::int64_t k, int tile_rows, int tile_cols) {
  const std::int64_t band_bytes = std::int64_t{12} << 20, tile_bytes = static_cast<std::int64_t>(tile_cols) * k * 2;
  const int rows = static_cast<int>((m + tile_rows - 1) / tile_rows), cols = static_cast<int>((n + tile_cols - 1) / tile_cols);
  return {rows, cols, static_cast<int>(std::clamp<std::int64_t>(band_bytes / tile_bytes, 1, cols))};
}

// Split-K, for outputs of fewer tiles than the GPU has SMs (a small model's weight gradients:
// out x in tiles, tokens long): each tile's k-tiles are cut into `splits` runs of at most
// `k_tiles_per_split`, every run a unit of work of its own writing an FP32 partial product, and
// a second pass sums the partials in a fixed order (deterministic; no atomics). Units are taken
// tile-major: unit u is tile u % tiles of the order, run u / tiles.
struct SplitK {
  int splits, k_tiles_per_split;
};

// As many runs a tile as fill the SMs once (no more than one per `min_run` k-tiles, so that a
// run's products outweigh its pipeline's filling and its partial's store), none of them empty.
inline SplitK split_k(std::int64_t tiles, int k_tiles, int sms, int min_run = 8) {
  std::int64_t splits = tiles >= sms ? 1 : std::min<std::int64_t>(sms / tiles, k_tiles / min_run);
  splits = std::max<std::int64_t>(splits, 1);
  const int per = static_cast<int>((k_tiles + splits - 1) / splits);
  return {(k_tiles + per - 1) / per, per};
}

}  // namespace quartet::cuda

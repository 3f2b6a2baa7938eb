// NVFP4 quantizers with round-to-nearest or stochastic elements: rtn, four_over_six,
// square16, sr (numerics.md §5).
#include <algorithm>

#include "numerics/quantize_impl.h"
#include "quartet/numerics/group_quantizers.h"

namespace quartet::detail {

namespace {

// NVFP4 group loop: fn(r, g, y, codes) returns the E4M3 block scale as a value.
template <class GroupFn>
QuantizedTensor quantize_groups(const WorkMatrix& w, float tensor_scale, GroupFn block_scale) {
  return quantize_groups<kNvGroup>(w, ElementFormat::nvfp4, tensor_scale,
                                   [&](std::int64_t r, std::int64_t g, const float* y, std::uint8_t* codes) {
                                     return e4m3_bits_of_grid_value(block_scale(r, g, y, codes));
                                   });
}

}  // namespace

QuantizedTensor quantize_rtn(const WorkMatrix& w, const QuantizerSpec& spec) {
  const TwoLevelScale ts = rtn_tensor_scale(w.amax, spec.val_max());
  return quantize_groups(w, ts.t, [&](std::int64_t, std::int64_t, const float* y, std::uint8_t* codes) {
    return rtn_group(y, group_absmax<kNvGroup>(y), ts, codes);
  });
}

QuantizedTensor quantize_four_over_six(const WorkMatrix& w) {
  const FourOverSixScale ts = four_over_six_tensor_scale(w.amax);
  return quantize_groups(w, ts.t, [&](std::int64_t, std::int64_t, const float* y, std::uint8_t* codes) {
    return four_over_six_group(y, ts, codes);
  });
}

QuantizedTensor quantize_square16(const WorkMatrix& w, const QuantizerSpec& spec) {
  const TwoLevelScale ts = rtn_tensor_scale(w.amax, spec.val_max());
  const std::int64_t groups = w.padded_cols / kNvGroup;
  const std::int64_t tile_rows = round_up(w.rows, kNvGroup) / kNvGroup;
  // The amax of each 16 x 16 tile (rows past the end count as zeros).
  std::vector<float> tile_amax(static_cast<std::size_t>(tile_rows * groups), 0.0f);
  for (std::int64_t r = 0; r < w.rows; ++r) {
    for (std::int64_t g = 0; g < groups; ++g) {
      float& m = tile_amax[static_cast<std::size_t>((r / kNvGroup) * groups + g)];
      m = fmax2(m, group_absmax<kNvGroup>(w.row(r) + g * kNvGroup));
    }
  }
  QuantizedTensor t = quantize_groups(w, ts.t, [&](std::int64_t r, std::int64_t g, const float* y, std::uint8_t* codes) {
    return rtn_group(y, tile_amax[static_cast<std::size_t>((r / kNvGroup) * groups + g)], ts, codes);
  });
  t.square_blocks = true;
  return t;
}

QuantizedTensor quantize_sr(const WorkMatrix& w, const QuantizerSpec& spec, const RandomContext& random) {
  const TwoLevelScale ts = rtn_tensor_scale(w.amax, spec.val_max());
  return quantize_groups(w, ts.t, [&](std::int64_t r, std::int64_t g, const float* y, std::uint8_t* codes) {
    std::uint16_t bits[kNvGroup];
    decision_bits_range(random, r, g * kNvGroup, kNvGroup, bits);  // one decision per element
    return sr_group(y, ts, bits, codes);
  });
}

}  // namespace quartet::detail

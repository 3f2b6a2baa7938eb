// NVFP4 quantizers with round-to-nearest or stochastic elements: rtn, four_over_six,
// square16, sr (numerics.md §5).
#include <algorithm>

#include "numerics/quantize_impl.h"
#include "quartet/numerics/group_quantizers.h"
#include "numerics/parallel.h"

namespace quartet::detail {

namespace {

std::uint8_t scale_bits(float block_scale) { return e4m3_bits_of_grid_value(block_scale); }

QuantizedTensor nvfp4_output(const WorkMatrix& w, float tensor_scale) {
  QuantizedTensor t = QuantizedTensor::zeros(ElementFormat::nvfp4, w.rows, w.cols);
  t.tensor_scale = tensor_scale;
  return t;
}

}  // namespace

QuantizedTensor quantize_rtn(const WorkMatrix& w, const QuantizerSpec& spec) {
  const TwoLevelScale ts = rtn_tensor_scale(w.amax, spec.val_max());
  QuantizedTensor t = nvfp4_output(w, ts.t);
  const std::int64_t groups = t.scale_cols();
#pragma omp parallel for schedule(static) if (worth_parallel(w.rows * w.padded_cols))
  for (std::int64_t r = 0; r < w.rows; ++r) {
    for (std::int64_t g = 0; g < groups; ++g) {
      const float* y = w.row(r) + g * kNvGroup;
      std::uint8_t codes[kNvGroup];
      const float s = rtn_group(y, group_absmax<kNvGroup>(y), ts, codes);
      store_codes(t, r, g * kNvGroup, codes, kNvGroup);
      t.scales[static_cast<std::size_t>(r * groups + g)] = scale_bits(s);
    }
  }
  return t;
}

QuantizedTensor quantize_four_over_six(const WorkMatrix& w) {
  const FourOverSixScale ts = four_over_six_tensor_scale(w.amax);
  QuantizedTensor t = nvfp4_output(w, ts.t);
  const std::int64_t groups = t.scale_cols();
#pragma omp parallel for schedule(static) if (worth_parallel(w.rows * w.padded_cols))
  for (std::int64_t r = 0; r < w.rows; ++r) {
    for (std::int64_t g = 0; g < groups; ++g) {
      std::uint8_t codes[kNvGroup];
      const float s = four_over_six_group(w.row(r) + g * kNvGroup, ts, codes);
      store_codes(t, r, g * kNvGroup, codes, kNvGroup);
      t.scales[static_cast<std::size_t>(r * groups + g)] = scale_bits(s);
    }
  }
  return t;
}

QuantizedTensor quantize_square16(const WorkMatrix& w, const QuantizerSpec& spec) {
  const TwoLevelScale ts = rtn_tensor_scale(w.amax, spec.val_max());
  QuantizedTensor t = nvfp4_output(w, ts.t);
  t.square_blocks = true;
  const std::int64_t groups = t.scale_cols();
  const std::int64_t tile_rows = round_up(w.rows, kNvGroup) / kNvGroup;
  // The amax of each 16 x 16 tile (rows past the end count as zeros).
  std::vector<float> tile_amax(static_cast<std::size_t>(tile_rows * groups), 0.0f);
#pragma omp parallel for schedule(static) if (worth_parallel(w.rows * w.padded_cols))
  for (std::int64_t tr = 0; tr < tile_rows; ++tr) {
    for (std::int64_t g = 0; g < groups; ++g) {
      float m = 0.0f;
      for (std::int64_t r = tr * kNvGroup; r < std::min(w.rows, (tr + 1) * kNvGroup); ++r) {
        m = fmax2(m, group_absmax<kNvGroup>(w.row(r) + g * kNvGroup));
      }
      tile_amax[static_cast<std::size_t>(tr * groups + g)] = m;
    }
  }
#pragma omp parallel for schedule(static) if (worth_parallel(w.rows * w.padded_cols))
  for (std::int64_t r = 0; r < w.rows; ++r) {
    for (std::int64_t g = 0; g < groups; ++g) {
      std::uint8_t codes[kNvGroup];
      const float m = tile_amax[static_cast<std::size_t>((r / kNvGroup) * groups + g)];
      const float s = rtn_group(w.row(r) + g * kNvGroup, m, ts, codes);
      store_codes(t, r, g * kNvGroup, codes, kNvGroup);
      t.scales[static_cast<std::size_t>(r * groups + g)] = scale_bits(s);
    }
  }
  return t;
}

QuantizedTensor quantize_sr(const WorkMatrix& w, const QuantizerSpec& spec, const RandomContext& random) {
  const TwoLevelScale ts = rtn_tensor_scale(w.amax, spec.val_max());
  QuantizedTensor t = nvfp4_output(w, ts.t);
  const std::int64_t groups = t.scale_cols();
#pragma omp parallel for schedule(static) if (worth_parallel(w.rows * w.padded_cols))
  for (std::int64_t r = 0; r < w.rows; ++r) {
    for (std::int64_t g = 0; g < groups; ++g) {
      std::uint16_t bits[kNvGroup];
      decision_bits_range(random, r, g * kNvGroup, kNvGroup, bits);  // one decision per element
      std::uint8_t codes[kNvGroup];
      const float s = sr_group(w.row(r) + g * kNvGroup, ts, bits, codes);
      store_codes(t, r, g * kNvGroup, codes, kNvGroup);
      t.scales[static_cast<std::size_t>(r * groups + g)] = scale_bits(s);
    }
  }
  return t;
}

}  // namespace quartet::detail

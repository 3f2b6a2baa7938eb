// MS-EDEN (numerics.md §5), the unbiased backward quantizer of Quartet II: elements are
// rounded to nearest, the EDEN correction S = <v,v>/<v,q> is folded into the block scale and
// the scale is stochastically rounded, one random decision per group (decision index = the
// group's index in its row).
#include <algorithm>

#include "numerics/quantize_impl.h"
#include "quartet/numerics/group_quantizers.h"
#include "numerics/parallel.h"

namespace quartet::detail {

QuantizedTensor quantize_ms_eden_g16(const WorkMatrix& w, const QuantizerSpec& spec, const RandomContext& random) {
  QuantizedTensor t = QuantizedTensor::zeros(ElementFormat::nvfp4, w.rows, w.cols);
  const std::int64_t groups = t.scale_cols();
  const float eden_scale = spec.val_max();

  // Pass 1: codes and provisional FP32 corrected scales c_g.
  std::vector<float> corrected(static_cast<std::size_t>(w.rows * groups));
  float max_corrected = 0.0f;
#pragma omp parallel for schedule(static) reduction(max : max_corrected) if (worth_parallel(w.rows * w.padded_cols))
  for (std::int64_t r = 0; r < w.rows; ++r) {
    for (std::int64_t g = 0; g < groups; ++g) {
      std::uint8_t codes[kNvGroup];
      const float c = ms_eden_g16_group(w.row(r) + g * kNvGroup, eden_scale, codes);
      store_codes(t, r, g * kNvGroup, codes, kNvGroup);
      corrected[static_cast<std::size_t>(r * groups + g)] = c;
      max_corrected = std::max(max_corrected, c);
    }
  }

  // Pass 2: post-hoc range alignment, t = M / 256, then SR of c_g / t onto E4M3.
  t.tensor_scale = ms_eden_g16_tensor_scale(max_corrected);
#pragma omp parallel for schedule(static) if (worth_parallel(w.rows * w.padded_cols))
  for (std::int64_t r = 0; r < w.rows; ++r) {
    std::uint16_t bits[8];
    for (std::int64_t g = 0; g < groups; ++g) {
      if (g % 8 == 0) decision_bits_range(random, r, g, 8, bits);
      const float e = ms_eden_g16_scale(corrected[static_cast<std::size_t>(r * groups + g)], t.tensor_scale, bits[g % 8]);
      t.scales[static_cast<std::size_t>(r * groups + g)] = e4m3_bits_of_grid_value(e);
    }
  }
  return t;
}

QuantizedTensor quantize_ms_eden_g128(const WorkMatrix& w, const QuantizerSpec& spec, const RandomContext& random) {
  QuantizedTensor t = QuantizedTensor::zeros(ElementFormat::nvfp4, w.rows, w.cols);
  const std::int64_t groups = t.scale_cols();
  const float eden_scale = spec.val_max();
  const auto t_divisor = static_cast<float>(255.99 * (6.0 / (spec.clip * spec.headroom)));
  const EdenResearchScale ts = ms_eden_g128_tensor_scale(w.amax, eden_scale, t_divisor);
  t.tensor_scale = ts.t;
#pragma omp parallel for schedule(static) if (worth_parallel(w.rows * w.padded_cols))
  for (std::int64_t r = 0; r < w.rows; ++r) {
    for (std::int64_t g0 = 0; g0 < groups; g0 += kEdenBlockGroups) {
      const int in_block = static_cast<int>(std::min<std::int64_t>(kEdenBlockGroups, groups - g0));
      EdenPartialSums partials[kEdenBlockGroups] = {};
      float sigma[kEdenBlockGroups] = {};
      for (int k = 0; k < in_block; ++k) {
        std::uint8_t codes[kNvGroup];
        const std::int64_t c0 = (g0 + k) * kNvGroup;
        sigma[k] = ms_eden_g128_group(w.row(r) + c0, ts, codes, &partials[k]);
        store_codes(t, r, c0, codes, kNvGroup);
      }
      const float correction = ms_eden_g128_correction(partials);
      std::uint16_t bits[kEdenBlockGroups];
      decision_bits_range(random, r, g0, in_block, bits);
      for (int k = 0; k < in_block; ++k) {
        const float e = ms_eden_g128_scale(sigma[k], correction, bits[k]);
        t.scales[static_cast<std::size_t>(r * groups + g0 + k)] = e4m3_bits_of_grid_value(e);
      }
    }
  }
  return t;
}

}  // namespace quartet::detail

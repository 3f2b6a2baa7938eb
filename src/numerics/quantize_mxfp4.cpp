// MXFP4 quantizers of Quartet I (numerics.md §6): QuEST forward with trust mask, and the
// backward quantizer with the x3 range trick (RNE, or SR for the v1 variant).
#include "numerics/quantize_impl.h"
#include "quartet/numerics/group_quantizers.h"
#include "numerics/parallel.h"

namespace quartet::detail {

QuantizedTensor quantize_mxfp4_quest(const WorkMatrix& w) {
  QuantizedTensor t = QuantizedTensor::zeros(ElementFormat::mxfp4, w.rows, w.cols);
  const std::int64_t groups = t.scale_cols();
  const std::int64_t mask_row_bytes = t.padded_cols() / 8;
  t.trust_mask.assign(static_cast<std::size_t>(w.rows * mask_row_bytes), 0);
#pragma omp parallel for schedule(static) if (worth_parallel(w.rows * w.padded_cols))
  for (std::int64_t r = 0; r < w.rows; ++r) {
    for (std::int64_t g = 0; g < groups; ++g) {
      std::uint8_t codes[kMxGroup];
      std::uint32_t trust = 0;
      const std::uint8_t scale = quest_group(w.row(r) + g * kMxGroup, codes, &trust);
      store_codes(t, r, g * kMxGroup, codes, kMxGroup);
      t.scales[static_cast<std::size_t>(r * groups + g)] = scale;
      std::uint8_t* mask = t.trust_mask.data() + r * mask_row_bytes + g * (kMxGroup / 8);
      for (int b = 0; b < 4; ++b) mask[b] = static_cast<std::uint8_t>(trust >> (8 * b));
    }
  }
  return t;
}

QuantizedTensor quantize_mxfp4_backward(const WorkMatrix& w, const RandomContext* random) {
  QuantizedTensor t = QuantizedTensor::zeros(ElementFormat::mxfp4, w.rows, w.cols);
  t.tensor_scale = kMxBackwardTensorScale;
  const std::int64_t groups = t.scale_cols();
#pragma omp parallel for schedule(static) if (worth_parallel(w.rows * w.padded_cols))
  for (std::int64_t r = 0; r < w.rows; ++r) {
    for (std::int64_t g = 0; g < groups; ++g) {
      std::uint16_t bits[kMxGroup];
      if (random) decision_bits_range(*random, r, g * kMxGroup, kMxGroup, bits);  // per element
      std::uint8_t codes[kMxGroup];
      const std::uint8_t scale = mxfp4_backward_group(w.row(r) + g * kMxGroup, random ? bits : nullptr, codes);
      store_codes(t, r, g * kMxGroup, codes, kMxGroup);
      t.scales[static_cast<std::size_t>(r * groups + g)] = scale;
    }
  }
  return t;
}

}  // namespace quartet::detail

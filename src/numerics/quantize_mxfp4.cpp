// MXFP4 quantizers of Quartet I (numerics.md §6): QuEST forward with trust mask, and the
// backward quantizer with the x3 range trick (RNE, or SR for the v1 variant).
#include "numerics/quantize_impl.h"
#include "quartet/numerics/group_quantizers.h"

namespace quartet::detail {

QuantizedTensor quantize_mxfp4_quest(const WorkMatrix& w) {
  const std::int64_t mask_row_bytes = round_up(w.cols, kMxGroup) / 8;
  std::vector<std::uint8_t> mask(static_cast<std::size_t>(w.rows * mask_row_bytes), 0);
  QuantizedTensor t = quantize_groups<kMxGroup>(
      w, ElementFormat::mxfp4, 1.0f, [&](std::int64_t r, std::int64_t g, const float* y, std::uint8_t* codes) {
        std::uint32_t trust = 0;
        const std::uint8_t scale = quest_group(y, codes, &trust);
        std::uint8_t* bytes = mask.data() + r * mask_row_bytes + g * (kMxGroup / 8);
        for (int b = 0; b < 4; ++b) bytes[b] = static_cast<std::uint8_t>(trust >> (8 * b));
        return scale;
      });
  t.trust_mask = std::move(mask);
  return t;
}

QuantizedTensor quantize_mxfp4_backward(const WorkMatrix& w, const RandomContext* random) {
  return quantize_groups<kMxGroup>(
      w, ElementFormat::mxfp4, kMxBackwardTensorScale,
      [&](std::int64_t r, std::int64_t g, const float* y, std::uint8_t* codes) {
        std::uint16_t bits[kMxGroup];
        if (random) decision_bits_range(*random, r, g * kMxGroup, kMxGroup, bits);  // per element
        return mxfp4_backward_group(y, random ? bits : nullptr, codes);
      });
}

}  // namespace quartet::detail

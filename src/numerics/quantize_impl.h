// Internal interface between quantize() (validation, padding, rotation) and the per-family
// quantizer loops. Each loop walks rows in parallel and calls the shared group functions of
// group_quantizers.h, so the CUDA kernels can reproduce it bit for bit.
#pragma once

#include <cstdint>
#include <vector>

#include "quartet/numerics/philox.h"
#include "quartet/numerics/quantized_tensor.h"
#include "quartet/numerics/quantizer.h"
#include "numerics/parallel.h"

namespace quartet::detail {

// The quantizer's input after zero padding to padded_cols and rotation.
struct WorkMatrix {
  std::vector<float> data;  // rows x padded_cols
  std::int64_t rows = 0;
  std::int64_t cols = 0;  // logical columns
  std::int64_t padded_cols = 0;
  float amax = 0.0f;

  const float* row(std::int64_t r) const { return data.data() + r * padded_cols; }
};

// Writes n unpacked codes starting at column c0 (even) of row r.
inline void store_codes(QuantizedTensor& t, std::int64_t r, std::int64_t c0, const std::uint8_t* codes, int n) {
  std::uint8_t* dst = t.codes.data() + r * t.code_row_bytes() + c0 / 2;
  for (int i = 0; i < n / 2; ++i) dst[i] = static_cast<std::uint8_t>(codes[2 * i] | (codes[2 * i + 1] << 4));
}

// The 16-bit random words of decisions first .. first+count-1 of a row (philox.h layout).
inline void decision_bits_range(const RandomContext& ctx, std::int64_t row, std::int64_t first, int count,
                                std::uint16_t* out) {
  random_decision_range(ctx, static_cast<std::uint32_t>(row), static_cast<std::uint32_t>(first), count, out);
}

// Quantizes every group of every row (rows in parallel): scale_byte(r, g, y, codes) writes
// the group's Group unpacked codes and returns its scale byte (E4M3 or E8M0).
template <int Group, class GroupFn>
QuantizedTensor quantize_groups(const WorkMatrix& w, ElementFormat format, float tensor_scale, GroupFn scale_byte) {
  QuantizedTensor t = QuantizedTensor::zeros(format, w.rows, w.cols);
  t.tensor_scale = tensor_scale;
  const std::int64_t groups = t.scale_cols();
#pragma omp parallel for schedule(static) if (worth_parallel(w.rows * w.padded_cols))
  for (std::int64_t r = 0; r < w.rows; ++r) {
    for (std::int64_t g = 0; g < groups; ++g) {
      std::uint8_t codes[Group];
      t.scales[static_cast<std::size_t>(r * groups + g)] = scale_byte(r, g, w.row(r) + g * Group, codes);
      store_codes(t, r, g * Group, codes, Group);
    }
  }
  return t;
}

QuantizedTensor quantize_rtn(const WorkMatrix& w, const QuantizerSpec& spec);
QuantizedTensor quantize_four_over_six(const WorkMatrix& w);
QuantizedTensor quantize_square16(const WorkMatrix& w, const QuantizerSpec& spec);
QuantizedTensor quantize_sr(const WorkMatrix& w, const QuantizerSpec& spec, const RandomContext& random);
QuantizedTensor quantize_ms_eden_g16(const WorkMatrix& w, const QuantizerSpec& spec, const RandomContext& random);
QuantizedTensor quantize_ms_eden_g128(const WorkMatrix& w, const QuantizerSpec& spec, const RandomContext& random);
QuantizedTensor quantize_mxfp4_quest(const WorkMatrix& w);
QuantizedTensor quantize_mxfp4_backward(const WorkMatrix& w, const RandomContext* random);

}  // namespace quartet::detail

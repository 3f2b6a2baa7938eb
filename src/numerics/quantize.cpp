#include <algorithm>
#include <cmath>
#include <fmt/format.h>

#include "numerics/quantize_impl.h"
#include "quartet/error.h"
#include "quartet/numerics/group_quantizers.h"
#include "numerics/parallel.h"

namespace quartet {

namespace {

void check_input(ConstMatrixView x, const Rotation& rotation) {
  check_quantize_shape(x.rows, x.cols, rotation);
  if (x.data == nullptr) throw Error("quantize: the input pointer is null");
  if (x.ld < x.cols) throw Error(fmt::format("quantize: leading dimension {} < {} columns", x.ld, x.cols));
  // Report the first non-finite element by position; a training run must never quantize
  // garbage silently.
  for (std::int64_t r = 0; r < x.rows; ++r) {
    const float* row = x.data + r * x.ld;
    for (std::int64_t c = 0; c < x.cols; ++c) {
      if (!std::isfinite(row[c])) {
        throw NonFiniteError(fmt::format("quantize: input element ({}, {}) of the {} x {} tensor is {}; quantizers need "
                                "finite values",
                                r, c, x.rows, x.cols, row[c]));
      }
    }
  }
}

detail::WorkMatrix prepare(ConstMatrixView x, int group, const Rotation& rotation) {
  detail::WorkMatrix w;
  w.rows = x.rows;
  w.cols = x.cols;
  w.padded_cols = round_up(x.cols, group);
  w.data.assign(static_cast<std::size_t>(w.rows * w.padded_cols), 0.0f);
  for (std::int64_t r = 0; r < w.rows; ++r) {
    std::copy_n(x.data + r * x.ld, x.cols, w.data.data() + r * w.padded_cols);
  }
  rotate_rows(w.data.data(), w.rows, w.cols, w.padded_cols, rotation);
  float amax = 0.0f;
#pragma omp parallel for reduction(max : amax) schedule(static) if (worth_parallel(static_cast<std::int64_t>(w.data.size())))
  for (std::int64_t i = 0; i < static_cast<std::int64_t>(w.data.size()); ++i) {
    amax = std::max(amax, std::fabs(w.data[static_cast<std::size_t>(i)]));
  }
  w.amax = amax;
  return w;
}

}  // namespace

void check_quantize_shape(std::int64_t rows, std::int64_t cols, const Rotation& rotation) {
  if (rows < 1 || cols < 1) {
    throw Error(fmt::format("quantize: the input must have at least one row and one column, got {} x {}", rows, cols));
  }
  if (rows >= static_cast<std::int64_t>(kRotationSignRow)) {
    throw Error(fmt::format("quantize: {} rows is more than the random-number counter can address", rows));
  }
  if (!is_supported_rotation_size(rotation.size)) {
    throw Error(fmt::format("quantize: rotation size must be 0, 16, 32 or 128, got {}", rotation.size));
  }
  if (rotation.size != 0 && cols % rotation.size != 0) {
    throw Error(fmt::format("quantize: a Hadamard rotation of size {} needs the reduction dimension (columns) "
                            "to be a multiple of {}, got {}",
                            rotation.size, rotation.size, cols));
  }
}

QuantizedTensor quantize(ConstMatrixView x, const QuantizerSpec& spec, const Rotation& rotation,
                         const RandomContext& random) {
  spec.validate();
  check_input(x, rotation);
  const ElementFormat format = quantizer_format(spec.kind);
  detail::WorkMatrix w = prepare(x, format_group_size(format), rotation);
  if (format == ElementFormat::nvfp4 && w.amax < kTinyAmax) {
    // Below 2^-96 a two-level NVFP4 scale is not representable (group_quantizers.h).
    std::fill(w.data.begin(), w.data.end(), 0.0f);
    w.amax = 0.0f;
  }

  QuantizedTensor out;
  switch (spec.kind) {
    case QuantizerKind::rtn: out = detail::quantize_rtn(w, spec); break;
    case QuantizerKind::four_over_six: out = detail::quantize_four_over_six(w); break;
    case QuantizerKind::square16: out = detail::quantize_square16(w, spec); break;
    case QuantizerKind::sr: out = detail::quantize_sr(w, spec, random); break;
    case QuantizerKind::ms_eden_g16: out = detail::quantize_ms_eden_g16(w, spec, random); break;
    case QuantizerKind::ms_eden_g128: out = detail::quantize_ms_eden_g128(w, spec, random); break;
    case QuantizerKind::mxfp4_quest: out = detail::quantize_mxfp4_quest(w); break;
    case QuantizerKind::mxfp4_rtn: out = detail::quantize_mxfp4_backward(w, nullptr); break;
    case QuantizerKind::mxfp4_sr: out = detail::quantize_mxfp4_backward(w, &random); break;
  }
  out.rotation_size = rotation.size;
  return out;
}

std::vector<float> dequantize_unrotated(const QuantizedTensor& tensor, const Rotation& rotation) {
  if (tensor.rotation_size != rotation.size) {
    throw Error(fmt::format("dequantize_unrotated: the tensor was quantized under a rotation of size {}, "
                            "but a rotation of size {} was given",
                            tensor.rotation_size, rotation.size));
  }
  std::vector<float> values = dequantize(tensor);
  unrotate_rows(values.data(), tensor.rows, tensor.cols, tensor.cols, rotation);
  return values;
}

}  // namespace quartet

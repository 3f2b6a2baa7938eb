// One interface for every quantizer of numerics.md §5–6: quantize a row-major view under a
// spec, a rotation and a random context; get a QuantizedTensor; dequantize it back.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "quartet/numerics/hadamard.h"
#include "quartet/numerics/matrix_view.h"
#include "quartet/numerics/philox.h"
#include "quartet/numerics/quantized_tensor.h"

namespace quartet {

enum class QuantizerKind : std::uint8_t {
  rtn,            // NVFP4 round to nearest, 1x16 blocks, clip factor
  four_over_six,  // NVFP4 RTN choosing block maximum 6 or 4 per block (forward only)
  square16,       // NVFP4 RTN with one scale per 16x16 tile (NVIDIA weights)
  sr,             // NVFP4 stochastic rounding with 17/16 headroom
  ms_eden_g16,    // MS-EDEN, canonical: per-16 correction, post-hoc range alignment
  ms_eden_g128,   // MS-EDEN, research form: one correction per 128 elements
  mxfp4_quest,    // MXFP4 QuEST forward (after a fixed Hadamard-32), with trust mask
  mxfp4_rtn,      // MXFP4 backward, x3 range, round to nearest
  mxfp4_sr,       // MXFP4 backward, x3 range, stochastic rounding (Quartet I v1)
};

inline constexpr std::array<QuantizerKind, 9> kAllQuantizers = {
    QuantizerKind::rtn,         QuantizerKind::four_over_six, QuantizerKind::square16,
    QuantizerKind::sr,          QuantizerKind::ms_eden_g16,   QuantizerKind::ms_eden_g128,
    QuantizerKind::mxfp4_quest, QuantizerKind::mxfp4_rtn,     QuantizerKind::mxfp4_sr};

std::string_view quantizer_name(QuantizerKind kind);
// Throws Error naming the unknown name and listing the valid ones.
QuantizerKind parse_quantizer(std::string_view name);
std::string quantizer_names_joined(std::string_view separator = ", ");

ElementFormat quantizer_format(QuantizerKind kind);
bool is_stochastic(QuantizerKind kind);

// Parameters with the spec's defaults. The element maximum a block scale maps to is
// V = 6 / (clip * headroom), evaluated in double and rounded once to FP32:
//   rtn, square16: clip c (default 1)             -> V = 6 / c
//   sr:            headroom h (default 17/16)     -> V = 6 / h
//   ms_eden_*:     clip 0.93, headroom 17/16      -> s = 6 * (16/17) / 0.93
// The other quantizers have no parameters; setting one is an error, never ignored.
struct QuantizerSpec {
  QuantizerKind kind = QuantizerKind::rtn;
  double clip = 1.0;
  double headroom = 1.0;

  static QuantizerSpec defaults(QuantizerKind kind);
  static QuantizerSpec parse(std::string_view name) { return defaults(parse_quantizer(name)); }

  float val_max() const;  // V (or s for MS-EDEN) as FP32
  void validate() const;  // throws Error on out-of-range or meaningless parameters
};

// Quantizes x (finite values only; rows, cols >= 1). If the rotation is enabled, each row is
// first transformed blockwise (cols must be a multiple of its size) and the result lives in
// the rotated domain. Random bits come from `random` (see philox.h); deterministic
// quantizers ignore it. Throws Error on bad input; nothing is returned then.
QuantizedTensor quantize(ConstMatrixView x, const QuantizerSpec& spec, const Rotation& rotation,
                         const RandomContext& random);

// The shape checks quantize() makes (at least one row and column, a supported rotation size
// dividing the columns, rows addressable by the random counter); throws Error.
void check_quantize_shape(std::int64_t rows, std::int64_t cols, const Rotation& rotation);

// Dequantizes and undoes the rotation: an estimate of the original x (rows x cols).
std::vector<float> dequantize_unrotated(const QuantizedTensor& tensor, const Rotation& rotation);

}  // namespace quartet

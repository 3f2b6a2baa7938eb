// Live quantization diagnostics (`quartet train --diagnostics N`, docs/diagnostics.md): on one
// micro-batch, for every quantized GEMM of every linear layer, how far each quantized operand is
// from the exact tensor it approximates, and how far the product the layer went on with is from
// the BF16 product of the exact operands.
//
// The measurements watch the training pass itself (a LinearProbe, linear.h): they run no
// quantizer and draw no random bits, so a run gives the same bits with and without them. They use
// Backend operations only (GEMMs, downloads of tensors and of quantized operands); the
// comparisons run on the host, in double.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "quartet/backend/backend.h"
#include "quartet/nn/linear.h"

namespace quartet {

// ||a - b|| / ||b||, ||a|| / ||b|| and <a, b> / (||a|| ||b||) of two vectors of equal length,
// accumulated in double in index order. Undefined values (a zero b; a zero vector's cosine) are
// NaN.
struct VectorComparison {
  double relative_error = 0;
  double norm_ratio = 0;
  double cosine = 0;
};
VectorComparison compare_vectors(const std::vector<double>& a, const std::vector<double>& b);

// The diagnostics measure the activations and their gradients on the micro-batch's first tokens,
// at most a token limit of them (0: all): at GPU scale whole tensors cost minutes of host time
// per measured step, and a thousand tokens estimate the same ratios of norms. The weights and the
// weight gradient are measured whole. A limit is a multiple of 128, so that an operand quantized
// transposed (tokens along its columns) keeps whole scale groups and rotation blocks.
inline constexpr std::int64_t kDiagnosticsTokenMultiple = 128;
// Throws Error unless the limit is 0 or a positive multiple of 128: "<what> must be 0 (whole
// tensors) or a multiple of 128, got <limit>".
void check_token_limit(std::int64_t limit, std::string_view what = "diagnostics: a token (row) limit");

// ||Q - X|| / ||X|| of one operand, over the first min(rows, row_limit) rows of X (all for 0;
// the limit as a token limit above): Q dequantized and rotated back along its reduction dimension
// (the RHT is orthonormal, so this is also the error in the rotated space the GEMM saw), X the
// exact tensor in the operand's layout (transposed, and its rows rotated by exact_rotation, as
// ProbedOperand says).
double operand_relative_error(Backend& backend, const ProbedOperand& operand, std::int64_t row_limit = 0);

struct GemmDiagnostics {
  LinearGemm gemm = LinearGemm::forward;
  std::string a_name, b_name;
  double a_error = 0, b_error = 0;  // operand_relative_error
  VectorComparison product;         // the layer's product against the exact one
};

// The operands' errors and the product's figures, with the token limit above.
GemmDiagnostics measure_gemm(Backend& backend, const ProbedGemm& gemm, std::int64_t token_limit = 0);

// The probe the trainer gives the first micro-batch of a diagnostic step: measures every GEMM it
// sees and keeps the figures per layer, in the order the layers first ran.
class QuantDiagnostics : public LinearProbe {
 public:
  struct Layer {
    std::string name;
    std::vector<GemmDiagnostics> gemms;  // in the order they ran: forward, dgrad, wgrad
  };

  explicit QuantDiagnostics(Backend& backend, std::int64_t token_limit = 0);
  void observe(const std::string& layer, const ProbedGemm& gemm) override;

  const std::vector<Layer>& layers() const { return layers_; }
  // Wall seconds spent measuring (the trainer leaves them out of the step's tokens/s), not
  // counting the wait for the device to reach the measured GEMM: that is the step's own time.
  double seconds() const { return seconds_; }

  // The metrics.jsonl record of `step`:
  //   {"kind": "diagnostics", "step": S, "seconds": T, "token_limit": R,
  //    "layers": {"layers.0.qkv_proj": {"forward": {"x_err": ., "w_err": ., "out_err": .,
  //               "cosine": ., "norm_ratio": .}, "dgrad": {"e_err", "wt_err", ...},
  //               "wgrad": {"et_err", "xt_err", ...}}, ...},
  //    "mean": {"forward": {...}, "dgrad": {...}, "wgrad": {...}}}
  // with "mean" each figure's average over the layers that ran that GEMM quantized. Undefined
  // figures are null.
  nlohmann::ordered_json to_json(std::int64_t step) const;

 private:
  Backend& backend_;
  std::int64_t token_limit_ = 0;
  std::vector<Layer> layers_;
  double seconds_ = 0;
  std::unique_ptr<DeviceMark> reached_;  // waited for before each measurement, untimed
};

}  // namespace quartet

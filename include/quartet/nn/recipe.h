// Linear-layer recipes (recipes.md) as data: for each of the six GEMM operands, which
// quantizer runs, with which rotation along that GEMM's reduction dimension, and where the
// operand comes from. The quantized linear layer (linear.h) executes any row of this table.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "quartet/numerics/quantizer.h"

namespace quartet {

enum class OperandSource : std::uint8_t {
  high_precision,      // the BF16 tensor (or FP32 master weight)
  requantized,         // the forward-quantized tensor, dequantized, transposed, re-quantized
  forward_transposed,  // the forward-quantized tensor transposed as is (16x16 square blocks)
};

struct OperandRule {
  std::optional<QuantizerSpec> quantizer;  // none: the GEMM runs in BF16
  int rotation = 0;                        // RHT size along the GEMM's reduction dimension
  OperandSource source = OperandSource::high_precision;

  bool quantized() const { return quantizer.has_value(); }
};

enum class SignPolicy : std::uint8_t {
  fixed_per_run,   // one set of backward rotation signs for the whole run (NVIDIA)
  fresh_per_call,  // fresh signs per backward call of each layer (TetraJet-v2, Quartet I/II)
};

struct Recipe {
  std::string name;
  OperandRule fwd_x, fwd_w;        // Y = X W^T, reduction over K
  OperandRule dgrad_e, dgrad_wt;   // dX = E W, reduction over N
  OperandRule wgrad_et, wgrad_xt;  // dW = E^T X, reduction over M (tokens)
  // The forward rotation is the fixed Hadamard (no random signs) when fwd rotation > 0.
  SignPolicy backward_signs = SignPolicy::fresh_per_call;
  // Quartet I: backward GEMM outputs live in the forward's rotated domain; they are masked by
  // the forward operand's trust mask and rotated back by H^T.
  bool backward_through_trust_mask = false;

  bool quantizes_forward() const { return fwd_x.quantized(); }
  bool quantizes_backward() const { return dgrad_e.quantized() || wgrad_et.quantized(); }
  // Whether backward needs the high-precision X (otherwise only the quantized one is kept).
  bool saves_high_precision_x() const;
  // Checks that each GEMM quantizes both operands or neither, with the same rotation, and
  // that sources refer to something the forward pass produced. Throws Error.
  void validate() const;
  std::string describe() const;  // one line per GEMM, for logs
};

// Ablation switches (recipes.md), applied on top of a named recipe.
struct RecipeOptions {
  bool quantize_forward = true;
  bool quantize_backward = true;
  std::optional<bool> four_over_six;           // forward RTN with or without 4/6
  std::optional<int> backward_rotation;        // 16, 32 or 128
  std::optional<int> eden_group;               // 16 (canonical) or 128 (research form)
  std::optional<double> forward_clip;          // RTN clip factor
  std::optional<double> backward_headroom;     // SR / MS-EDEN headroom
  std::optional<double> backward_clip;         // MS-EDEN clip
  std::optional<QuantizerKind> backward_quantizer;  // research: replace every backward quantizer
};

const std::vector<std::string>& recipe_names();
// Throws Error naming the unknown recipe and listing the known ones, or an impossible option.
Recipe make_recipe(std::string_view name, const RecipeOptions& options = {});

}  // namespace quartet

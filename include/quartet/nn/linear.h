// The quantized linear layer Y = X W^T: one piece of code that executes any recipe row
// (recipe.h) on any backend. The forward pass saves exactly what the recipe says the backward
// pass needs.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "quartet/backend/backend.h"
#include "quartet/nn/recipe.h"

namespace quartet {

// Where a layer's random bits come from: each layer instance owns a block of Philox streams
// (one per operand, one for its backward rotation signs); `call` counts forward/backward
// calls (the trainer uses the micro-step), so every call draws fresh bits.
struct LinearRandom {
  std::uint64_t seed = 0;
  std::uint32_t layer = 0;
  std::uint32_t call = 0;
};

inline constexpr std::uint32_t kStreamsPerLinear = 8;

// ---- diagnostics (docs/diagnostics.md) ----
// A probe sees each quantized GEMM of a linear-layer call as the layer ran it, without changing
// anything: no quantizer runs for it (so no random bits are drawn), and the layer's outputs and
// gradients are the same bits with and without a probe.

enum class LinearGemm : std::uint8_t { forward, dgrad, wgrad };
const char* gemm_name(LinearGemm gemm);  // "forward", "dgrad", "wgrad"

// One quantized GEMM operand: a [rows, cols] matrix, cols the GEMM's reduction dimension, whose
// values live in `rotation`'s domain along cols. It approximates `exact` (exact^T when
// `transposed`), whose rows are first rotated by `exact_rotation`: the forward rotation, for a
// backward operand re-used from a forward-quantized tensor of a recipe that rotates forward
// (Quartet I), else none.
struct ProbedOperand {
  const char* name = "";  // "x", "w", "e", "wt", "et", "xt"
  Tensor exact;
  bool transposed = false;
  Rotation exact_rotation = Rotation::none();
  QTensor quantized;
  Rotation rotation = Rotation::none();
};

// A quantized GEMM of one call: its operands; the product the layer went on with (after Quartet
// I's trust mask and rotation back; for wgrad this call's product alone, not the accumulated
// gradient); and the product of the exact operands by the BF16 GEMM the bf16 recipe runs (a new
// tensor of the product's shape). The products are computed when the probe asks for them (so
// that it counts the time they take), during observe() only.
struct ProbedGemm {
  LinearGemm gemm = LinearGemm::forward;
  ProbedOperand a, b;
  std::function<Tensor()> product;
  std::function<Tensor()> exact_product;
};

// The inputs of one backward call of a linear layer, quantized or not: X (the exact input the
// forward pass received), the master weight W (and its BF16 copy, when the model keeps one), the
// output gradient E = dY, and the layer's random streams: what `quartet diagnose` needs to run the
// layer's backward pass again, under any recipe, with fresh draws.
struct LinearCall {
  Tensor x, w, w_bf16, dy;
  LinearRandom random;
};

class LinearProbe {
 public:
  virtual ~LinearProbe() = default;
  // Called inside linear_forward / linear_backward: the tensors are the layer's own, valid for
  // the call only; a probe reads them and must not write them.
  virtual void observe(const std::string& layer, const ProbedGemm& gemm) = 0;
  // Called at the start of every linear_backward the probe watches, whatever the recipe (bf16
  // included), before any GEMM; the same rules: the tensors are the layer's, valid for the call
  // only (the model reuses gradient buffers), to be copied and not written. Default: nothing.
  virtual void observe_call(const std::string& /*layer*/, const LinearCall& /*call*/) {}
};

// Which probe sees a layer's GEMMs, and the name it knows the layer by. No probe: nothing extra
// is computed or kept.
struct LinearProbeHook {
  LinearProbe* probe = nullptr;
  std::string layer;
};

// What the forward pass keeps for the backward pass.
struct LinearSaved {
  Tensor x;    // high-precision X, only if the recipe's backward needs it
  QTensor xq;  // forward-quantized X, if quantized
  QTensor wq;  // forward-quantized W, if quantized
  Tensor probed_x;  // X for a probe's exact wgrad, only when a probe watches the call
  std::int64_t tokens = 0;

  // Bytes held per token of activations (X, quantized or not); the quantized W is a
  // per-step cost that does not grow with the batch and is reported separately.
  std::size_t activation_bytes() const;
  std::size_t weight_bytes() const { return wq.defined() ? wq.bytes : 0; }
};

// y [M, N] = x [M, K] w [N, K]^T under the recipe. w is the master weight (what quantizers
// read); w_bf16, if given, its BF16 copy, which the unquantized GEMMs read instead (the same
// values their rounding would make, without a conversion per call). Where the recipe keeps X in
// high precision, saved.x shares x's buffer: x must not change before the backward pass.
// A probe (if any) sees the quantized forward GEMM; its backward GEMMs need the same hook given
// to linear_backward.
void linear_forward(Backend& backend, const Recipe& recipe, const Tensor& x, const Tensor& w, Tensor& y,
                    LinearSaved& saved, const LinearRandom& random, const Tensor& w_bf16 = Tensor{},
                    const LinearProbeHook& probe = {});

// What linear_forward saves for the backward pass, bit for bit, without its product: for a
// caller that keeps only x and w between the passes (a compiled graph) and recomputes the rest.
LinearSaved linear_saved_for_backward(Backend& backend, const Recipe& recipe, const Tensor& x, const Tensor& w,
                                      const LinearRandom& random);

// dx [M, K] = dy w (overwritten); dw [N, K] += dy^T x (accumulated).
void linear_backward(Backend& backend, const Recipe& recipe, const Tensor& dy, const Tensor& w, const LinearSaved& saved,
                     Tensor& dx, Tensor& dw, const LinearRandom& random, const Tensor& w_bf16 = Tensor{},
                     const LinearProbeHook& probe = {});

// The rotation a recipe's backward pass uses in a given call (shared by its four operands).
Rotation backward_rotation(const Recipe& recipe, int size, const LinearRandom& random);

}  // namespace quartet

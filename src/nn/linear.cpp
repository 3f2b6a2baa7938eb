#include "quartet/nn/linear.h"

#include <fmt/format.h>

#include <tuple>

#include "quartet/error.h"

namespace quartet {

namespace {

enum Operand : std::uint32_t { kFwdX = 0, kFwdW, kDgradE, kDgradWt, kWgradEt, kWgradXt, kBackwardSigns };

RandomContext operand_random(const LinearRandom& r, Operand op, bool fixed_per_run = false) {
  return RandomContext{r.seed, r.layer * kStreamsPerLinear + op, fixed_per_run ? 0u : r.call};
}

Rotation forward_rotation(const OperandRule& rule) {
  return rule.rotation ? Rotation::hadamard(rule.rotation) : Rotation::none();
}

// The B operand of a backward GEMM that re-uses a forward tensor: X^T or W^T, as the rule says.
QTensor backward_operand(Backend& backend, const OperandRule& rule, const Tensor& high_precision,
                         const QTensor& forward_quantized, const Rotation& rotation, const RandomContext& random) {
  switch (rule.source) {
    case OperandSource::high_precision:
      return backend.quantize(high_precision, /*transpose=*/true, *rule.quantizer, rotation, random);
    case OperandSource::requantized:
      return backend.requantize_transposed(forward_quantized, *rule.quantizer, rotation, random);
    case OperandSource::forward_transposed: return backend.transpose_square_blocks(forward_quantized);
  }
  throw Error("unknown operand source");
}

const Tensor& gemm_weight(const Tensor& w, const Tensor& w_bf16) {
  if (!w_bf16.defined()) return w;
  if (w_bf16.shape() != w.shape()) {
    throw Error(fmt::format("linear: the BF16 weight copy {} does not match the weight {}", shape_string(w_bf16.shape()),
                            shape_string(w.shape())));
  }
  return w_bf16;
}

// The unquantized GEMMs: what the bf16 recipe runs, and the exact products a probe compares with.
void exact_forward(Backend& backend, const Tensor& x, const Tensor& w, const Tensor& w_bf16, Tensor& y) {
  backend.gemm(y, x, false, gemm_weight(w, w_bf16), false, /*accumulate=*/false);
}
void exact_dgrad(Backend& backend, const Tensor& dy, const Tensor& w, const Tensor& w_bf16, Tensor& dx) {
  backend.gemm(dx, dy, false, gemm_weight(w, w_bf16), true, /*accumulate=*/false);
}
void exact_wgrad(Backend& backend, const Tensor& dy, const Tensor& x, Tensor& dw, bool accumulate) {
  if (!x.defined()) throw Error("linear backward: the forward pass did not keep X");
  backend.gemm(dw, dy, true, x, true, accumulate);
}

// A probed backward operand re-used from a forward tensor lives in the forward rotation's domain
// along the forward reduction dimension (Quartet I); one quantized from the high-precision
// tensor does not.
Rotation exact_rotation(const OperandRule& rule, const Rotation& forward) {
  return rule.source == OperandSource::high_precision ? Rotation::none() : forward;
}

// Shows the probe (if any) one quantized GEMM of this call.
void show_probe(const LinearProbeHook& probe, LinearGemm gemm, ProbedOperand a, ProbedOperand b,
                std::function<Tensor()> product, std::function<Tensor()> exact_product) {
  if (!probe.probe) return;
  probe.probe->observe(probe.layer, ProbedGemm{gemm, std::move(a), std::move(b), std::move(product),
                                               std::move(exact_product)});
}

void check_linear_shapes(const Tensor& x, const Tensor& w, const Tensor& y) {
  if (x.ndim() != 2 || w.ndim() != 2 || y.ndim() != 2 || x.dim(1) != w.dim(1) || y.dim(0) != x.dim(0) ||
      y.dim(1) != w.dim(0)) {
    throw Error(fmt::format("linear: X {} W {} Y {} do not fit Y = X W^T", shape_string(x.shape()), shape_string(w.shape()),
                            shape_string(y.shape())));
  }
}

}  // namespace

std::size_t LinearSaved::activation_bytes() const {
  return (x.defined() ? x.bytes() : 0) + (xq.defined() ? xq.bytes : 0);
}

Rotation backward_rotation(const Recipe& recipe, int size, const LinearRandom& random) {
  if (size == 0) return Rotation::none();
  return Rotation::random(size, operand_random(random, kBackwardSigns, recipe.backward_signs == SignPolicy::fixed_per_run));
}

const char* gemm_name(LinearGemm gemm) {
  switch (gemm) {
    case LinearGemm::forward: return "forward";
    case LinearGemm::dgrad: return "dgrad";
    case LinearGemm::wgrad: return "wgrad";
  }
  return "?";
}

namespace {

// What the backward re-uses of the forward's operands: the rest is dropped.
void keep_what_backward_needs(const Recipe& recipe, const Tensor& x, LinearSaved& saved) {
  if (recipe.saves_high_precision_x()) saved.x = x;
  const bool need_xq = recipe.wgrad_xt.quantized() && recipe.wgrad_xt.source != OperandSource::high_precision;
  const bool need_wq = recipe.dgrad_wt.quantized() && recipe.dgrad_wt.source != OperandSource::high_precision;
  if (!need_xq && !recipe.backward_through_trust_mask) saved.xq = QTensor{};
  if (!need_wq && !recipe.backward_through_trust_mask) saved.wq = QTensor{};
}

}  // namespace

void linear_forward(Backend& backend, const Recipe& recipe, const Tensor& x, const Tensor& w, Tensor& y,
                    LinearSaved& saved, const LinearRandom& random, const Tensor& w_bf16, const LinearProbeHook& probe) {
  check_linear_shapes(x, w, y);
  saved = LinearSaved{};
  saved.tokens = x.dim(0);
  if (recipe.fwd_x.quantized()) {
    const Rotation rot = forward_rotation(recipe.fwd_x);
    saved.xq = backend.quantize(x, false, *recipe.fwd_x.quantizer, rot, operand_random(random, kFwdX));
    saved.wq = backend.quantize(w, false, *recipe.fwd_w.quantizer, rot, operand_random(random, kFwdW));
    backend.gemm_quantized(y, saved.xq, saved.wq, /*accumulate=*/false);
    show_probe(probe, LinearGemm::forward, {"x", x, false, Rotation::none(), saved.xq, rot},
               {"w", w, false, Rotation::none(), saved.wq, rot}, [&] { return y; },
               [&] {
                 Tensor exact = backend.empty(y.shape(), y.dtype());
                 exact_forward(backend, x, w, w_bf16, exact);
                 return exact;
               });
  } else {
    exact_forward(backend, x, w, w_bf16, y);
  }
  if (probe.probe) saved.probed_x = x;
  keep_what_backward_needs(recipe, x, saved);
}

LinearSaved linear_saved_for_backward(Backend& backend, const Recipe& recipe, const Tensor& x, const Tensor& w,
                                      const LinearRandom& random) {
  if (x.ndim() != 2 || w.ndim() != 2 || x.dim(1) != w.dim(1)) {
    throw Error(fmt::format("linear: X {} W {} do not fit X W^T", shape_string(x.shape()), shape_string(w.shape())));
  }
  LinearSaved saved;
  saved.tokens = x.dim(0);
  // The forward's quantizations, the same calls with the same random streams: the same bits.
  if (recipe.fwd_x.quantized()) {
    const Rotation rot = forward_rotation(recipe.fwd_x);
    saved.xq = backend.quantize(x, false, *recipe.fwd_x.quantizer, rot, operand_random(random, kFwdX));
    saved.wq = backend.quantize(w, false, *recipe.fwd_w.quantizer, rot, operand_random(random, kFwdW));
    // No forward product takes their GEMM copies here, which would free them.
    backend.drop_gemm_copy(saved.xq);
    backend.drop_gemm_copy(saved.wq);
  }
  keep_what_backward_needs(recipe, x, saved);
  return saved;
}

void linear_backward(Backend& backend, const Recipe& recipe, const Tensor& dy, const Tensor& w, const LinearSaved& saved,
                     Tensor& dx, Tensor& dw, const LinearRandom& random, const Tensor& w_bf16,
                     const LinearProbeHook& probe) {
  dy.expect("linear backward dY", {saved.tokens, w.dim(0)}, dy.dtype());
  dx.expect("linear backward dX", {dy.dim(0), w.dim(1)}, dx.dtype());
  dw.expect("linear backward dW", w.shape(), dw.dtype());
  const Rotation fwd_rot = forward_rotation(recipe.fwd_x);
  const Tensor& x = saved.x.defined() ? saved.x : saved.probed_x;  // the exact X, where kept
  if (probe.probe) probe.probe->observe_call(probe.layer, LinearCall{x, w, w_bf16, dy, random});

  // E and E^T from one read of dY where both backward GEMMs quantize it; each operand's own
  // rotation and random stream, so the bits are those of the two quantize calls.
  QTensor e, et;
  if (recipe.dgrad_e.quantized() && recipe.wgrad_et.quantized()) {
    std::tie(e, et) = backend.quantize_both_ways(
        dy, *recipe.dgrad_e.quantizer, backward_rotation(recipe, recipe.dgrad_e.rotation, random),
        operand_random(random, kDgradE), *recipe.wgrad_et.quantizer,
        backward_rotation(recipe, recipe.wgrad_et.rotation, random), operand_random(random, kWgradEt));
  }

  // dgrad: dX = E W, reduction over N. A = E [M, N], B = W^T [K, N].
  if (recipe.dgrad_e.quantized()) {
    const Rotation rot = backward_rotation(recipe, recipe.dgrad_e.rotation, random);
    if (!e.defined()) e = backend.quantize(dy, false, *recipe.dgrad_e.quantizer, rot, operand_random(random, kDgradE));
    const QTensor wt = backward_operand(backend, recipe.dgrad_wt, w, saved.wq, rot, operand_random(random, kDgradWt));
    backend.gemm_quantized(dx, e, wt, false);
    if (recipe.backward_through_trust_mask) backend.apply_trust_mask_and_unrotate(dx, saved.xq, fwd_rot);
    show_probe(probe, LinearGemm::dgrad, {"e", dy, false, Rotation::none(), e, rot},
               {"wt", w, true, exact_rotation(recipe.dgrad_wt, fwd_rot), wt, rot}, [&] { return dx; },
               [&] {
                 Tensor exact = backend.empty(dx.shape(), dx.dtype());
                 exact_dgrad(backend, dy, w, w_bf16, exact);
                 return exact;
               });
  } else {
    exact_dgrad(backend, dy, w, w_bf16, dx);
    if (recipe.backward_through_trust_mask) backend.apply_trust_mask_and_unrotate(dx, saved.xq, fwd_rot);
  }

  // wgrad: dW += E^T X, reduction over M. A = E^T [N, M], B = X^T [K, M].
  Tensor contribution = dw;
  if (recipe.backward_through_trust_mask) contribution = backend.empty(dw.shape(), dw.dtype());
  const bool accumulate = !recipe.backward_through_trust_mask;
  if (recipe.wgrad_et.quantized()) {
    const Rotation rot = backward_rotation(recipe, recipe.wgrad_et.rotation, random);
    if (!et.defined()) et = backend.quantize(dy, true, *recipe.wgrad_et.quantizer, rot, operand_random(random, kWgradEt));
    const QTensor xt = backward_operand(backend, recipe.wgrad_xt, saved.x, saved.xq, rot, operand_random(random, kWgradXt));
    backend.gemm_quantized(contribution, et, xt, accumulate);
    if (recipe.backward_through_trust_mask) backend.apply_trust_mask_and_unrotate(contribution, saved.wq, fwd_rot);
    // This call's product alone: `contribution` is the accumulated gradient unless the trust mask
    // made it separate. The exact one accumulates into zeros, as the bf16 recipe's first micro-batch.
    show_probe(probe, LinearGemm::wgrad, {"et", dy, true, Rotation::none(), et, rot},
               {"xt", x, true, exact_rotation(recipe.wgrad_xt, fwd_rot), xt, rot},
               [&] {
                 if (!accumulate) return contribution;
                 Tensor product = backend.empty(dw.shape(), dw.dtype());
                 backend.gemm_quantized(product, et, xt, false);
                 return product;
               },
               [&] {
                 Tensor exact = backend.zeros(dw.shape(), dw.dtype());
                 exact_wgrad(backend, dy, x, exact, /*accumulate=*/true);
                 return exact;
               });
  } else {
    exact_wgrad(backend, dy, saved.x, contribution, accumulate);
    if (recipe.backward_through_trust_mask) backend.apply_trust_mask_and_unrotate(contribution, saved.wq, fwd_rot);
  }
  if (recipe.backward_through_trust_mask) backend.add_inplace(dw, contribution);
}

}  // namespace quartet

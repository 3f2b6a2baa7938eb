// Gradient-estimator measurements (`quartet diagnose CHECKPOINT`, docs/diagnostics.md): on a
// trained model's real activations and gradients, how far each recipe's backward products are
// from the exact ones in one draw (the error), and how far the mean of k independent draws is
// (the bias: for an unbiased estimator it falls like 1/sqrt(k); a biased one levels off).
//
// One exact pass of the model (the bf16 recipe) gives every linear layer's real X, W and E = dY
// (capture_linear_inputs). Then each recipe's own linear layer (linear.h) runs the layer's forward
// pass once and its backward pass `draws` times, each draw as another micro-step of a run: fresh
// stochastic-rounding bits, MS-EDEN coins and (for recipes that draw them per call) rotation
// signs. Everything runs through Backend operations the training already uses (the products are
// read back to the host and compared in double), so any backend can run it without a kernel of
// its own.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "quartet/backend/backend.h"
#include "quartet/nn/linear.h"
#include "quartet/nn/llama.h"
#include "quartet/nn/recipe.h"

namespace quartet {

// One linear layer's inputs in the exact pass: X and E are copies the capture owns; W (and its
// BF16 copy) are the model's weights, which must not change while the capture is used.
struct LinearCapture {
  std::string layer;  // "layers.<block>.<qkv_proj|o_proj|gate_up_proj|down_proj>"
  LinearCall call;
};

// Runs forward and backward once over one micro-batch (tokens and targets: batch * seq ids, as
// LlamaModel::forward_backward takes them; the loss scaled by grad_scale) and returns the inputs
// of each linear layer of the blocks whose name `keep` accepts (all when empty), in the model's
// order (block by block, qkv_proj, o_proj, gate_up_proj, down_proj). The pass runs under the
// model's recipe: build it with bf16 for the exact X and E. The model's parameter gradients are
// left as the pass made them.
std::vector<LinearCapture> capture_linear_inputs(Backend& backend, LlamaModel& model,
                                                 const std::vector<std::int32_t>& tokens,
                                                 const std::vector<std::int32_t>& targets, std::int64_t batch,
                                                 std::int64_t seq, double grad_scale,
                                                 const std::function<bool(const std::string&)>& keep = {});

// What a product's draws are compared with.
enum class GradientReference : std::uint8_t {
  // G: the BF16 product of the real operands (dX = E W, dW = E^T X), as `--diagnostics` computes
  // it: what training means to follow.
  exact,
  // G with the operand the backward pass re-uses from the forward pass (re-quantized, or reused
  // transposed) replaced by its forward-quantized value, and (Quartet I) through the forward's
  // trust mask and rotation back: the expectation of an unbiased backward quantizer. Only for a
  // product whose B operand comes from the forward-quantized tensor.
  forward_quantized,
};
const char* reference_name(GradientReference reference);  // "exact", "forward_quantized"

// One product (dgrad or wgrad) of one layer against one reference, over the draws.
struct EstimatorCurve {
  LinearGemm product = LinearGemm::dgrad;
  GradientReference reference = GradientReference::exact;
  std::vector<double> draw_errors;  // ||G_b - G|| / ||G|| of each draw b
  std::vector<std::int64_t> k;      // 1, 2, 4, ... and the number of draws
  std::vector<double> bias;         // ||mean of draws 1..k - G|| / ||G||, one per k

  double error() const;     // the mean of draw_errors
  double error_sd() const;  // their standard deviation (n - 1)
  // The least-squares slope of log bias over log k: -0.5 for an unbiased estimator, 0 for a
  // plateau (NaN when a bias is 0).
  double slope() const;
  // The bias that stays as k grows, estimated without the draws' noise: sqrt(max(0, bias_B^2 -
  // s^2 / B)), s^2 the draws' variance around their mean (relative to ||G||^2; unbiased for the
  // squared bias).
  double bias_limit() const;
};

// 1, 2, 4, ... below draws, then draws.
std::vector<std::int64_t> bias_draw_counts(std::int64_t draws);

// `draws` (>= 2) draws of the recipe's backward pass on one captured layer; draw b runs as
// micro-step b of a run seeded `seed` (LinearRandom{seed, layer, b}). The curves of every product
// the recipe quantizes, each against the exact product and, where the backward pass re-uses a
// forward-quantized operand, against the forward-quantized product; none for a recipe that runs
// its backward pass in BF16. `on_draw(b)` is called after each draw (1-based). Throws Error when
// draws < 2 or the recipe quantizes its forward pass stochastically (there would be no one
// forward-quantized operand to compare with).
std::vector<EstimatorCurve> measure_estimator(Backend& backend, const Recipe& recipe, const LinearCapture& layer,
                                              std::int64_t draws, std::uint64_t seed,
                                              const std::function<void(std::int64_t)>& on_draw = {});

// The measurements of one recipe on one layer.
struct LayerEstimators {
  std::string recipe;
  std::string layer;
  std::vector<EstimatorCurve> curves;
};

// Each (recipe, product, reference) averaged over the layers measured: the errors and each k's
// bias averaged; the slope fitted to the averaged curve; the limit the average of the layers'.
struct MeanEstimator {
  std::string recipe;
  LinearGemm product = LinearGemm::dgrad;
  GradientReference reference = GradientReference::exact;
  std::int64_t layers = 0;
  double error = 0;
  std::vector<std::int64_t> k;
  std::vector<double> bias;
  double slope = 0;
  double bias_limit = 0;
};

// In the order the recipes were measured, then dgrad before wgrad, exact before forward_quantized.
std::vector<MeanEstimator> mean_over_layers(const std::vector<LayerEstimators>& measured);

// The least-squares slope of log y over log x (NaN unless every value is positive and there are
// two distinct x).
double log_log_slope(const std::vector<std::int64_t>& x, const std::vector<double>& y);

// diagnose.json's "rows" (one per layer, product and reference) and "mean" (mean_over_layers):
//   {"recipe", "layer", "product", "reference", "error", "error_sd", "k": [...], "bias": [...],
//    "slope", "bias_limit"}   ("layers" instead of "layer" and no "error_sd" in "mean")
// Undefined figures are null.
nlohmann::ordered_json estimator_rows_json(const std::vector<LayerEstimators>& measured);
nlohmann::ordered_json estimator_means_json(const std::vector<MeanEstimator>& means);

// The "mean" rows of a diagnose.json read back (a null figure as NaN), to draw them where they
// were not measured. Throws Error naming `where` and the row for a missing field, a wrong type,
// an unknown product or reference, or k and bias of different lengths.
std::vector<MeanEstimator> estimator_means_from_json(const nlohmann::json& mean, const std::string& where);

}  // namespace quartet

// Gradient-estimator measurements (`quartet diagnose`, docs/diagnostics.md): the captured inputs
// are the layers' real ones, and the statistics tell an unbiased backward estimator (its bias
// falls like 1/sqrt(k), against the right reference) from a biased one (its bias levels off at a
// height computed here independently).
//
// The statistical checks use fixed seeds and tolerances from the draws' own spread: for an
// unbiased estimator with draws G_b = G + eta_b, B ||mean - G||^2 has the expectation of one draw's
// ||G_b - G||^2, and (for nearly Gaussian eta) its spread: so z = B bias_B^2 / mean_b(e_b^2) is 1
// within a few times rho = sd_b(e_b^2) / mean_b(e_b^2). A bias beta adds B beta^2 / mean(e^2).
#include "quartet/train/diagnose.h"

#include <gtest/gtest.h>

#include <fmt/format.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "quartet/error.h"
#include "quartet/numerics/bf16.h"
#include "quartet/numerics/quantizer.h"
#include "support/gradcheck.h"

namespace quartet {
namespace {

using namespace testing;  // quartet::testing: random_values, norm, minus, matmul_tn

// z = B bias_B^2 / mean(e^2) and rho = sd(e^2) / mean(e^2) of one curve (see the top).
struct DrawStatistic {
  double z = 0, rho = 0;
};

DrawStatistic statistic(const EstimatorCurve& c) {
  const double n = static_cast<double>(c.draw_errors.size());
  double m = 0;
  for (double e : c.draw_errors) m += e * e;
  m /= n;
  double v = 0;
  for (double e : c.draw_errors) v += (e * e - m) * (e * e - m);
  const double sd = std::sqrt(v / (n - 1));
  return {n * c.bias.back() * c.bias.back() / m, sd / m};
}

const EstimatorCurve& curve(const std::vector<EstimatorCurve>& curves, LinearGemm product, GradientReference reference) {
  for (const EstimatorCurve& c : curves) {
    if (c.product == product && c.reference == reference) return c;
  }
  throw Error(fmt::format("no {} curve against {}", gemm_name(product), reference_name(reference)));
}

// One layer's inputs, Gaussian, on the CPU backend: M tokens, K inputs, N outputs (multiples of
// 128, so that every recipe's rotations fit); E scaled small, as a loss gradient is.
struct SyntheticLayer {
  static constexpr std::int64_t M = 256, K = 128, N = 256;
  std::unique_ptr<Backend> be = make_cpu_backend();
  LinearCapture capture;

  SyntheticLayer() {
    Tensor x = be->empty({M, K}, DType::bf16), w = be->empty({N, K}, DType::f32), dy = be->empty({M, N}, DType::bf16);
    be->upload(x, random_values(M * K, 61));
    be->upload(w, random_values(N * K, 62, 0.05));
    be->upload(dy, random_values(M * N, 63, 1e-3));
    capture = {"layers.0.o_proj", LinearCall{x, w, Tensor{}, dy, LinearRandom{0, 1, 0}}};
  }
  std::vector<EstimatorCurve> measure(const Recipe& recipe, std::int64_t draws, std::uint64_t seed = 11) {
    return measure_estimator(*be, recipe, capture, draws, seed);
  }
  // The relative error of a backward product whose re-used operand (W for dgrad, X for wgrad) is
  // replaced by its quantization with the forward quantizer `forward`, computed here in double.
  double forward_quantization_bias(LinearGemm product, QuantizerKind forward) {
    const bool dgrad = product == LinearGemm::dgrad;
    const std::vector<double> a = be->download(dgrad ? capture.call.w : capture.call.x);
    const std::int64_t rows = dgrad ? N : M;
    const std::vector<float> af(a.begin(), a.end());
    const std::vector<float> qf = dequantize(quantize(ConstMatrixView(af.data(), rows, K),
                                                      QuantizerSpec::defaults(forward),
                                                      Rotation::none(), {}));
    const std::vector<double> q(qf.begin(), qf.end()), e = be->download(capture.call.dy);
    // dgrad: E [M, N] times A [N, K]; wgrad: E^T [N, M] times A [M, K].
    const auto product_with = [&](const std::vector<double>& operand) {
      return dgrad ? matmul_tn(e, false, operand, true, M, K, N) : matmul_tn(e, true, operand, true, N, K, M);
    };
    const std::vector<double> exact = product_with(a);
    return norm(minus(product_with(q), exact)) / norm(exact);
  }
};

TEST(Diagnose, DrawCountsAndSlopes) {
  EXPECT_EQ(bias_draw_counts(64), (std::vector<std::int64_t>{1, 2, 4, 8, 16, 32, 64}));
  EXPECT_EQ(bias_draw_counts(10), (std::vector<std::int64_t>{1, 2, 4, 8, 10}));
  EXPECT_EQ(bias_draw_counts(2), (std::vector<std::int64_t>{1, 2}));
  const std::vector<std::int64_t> k = {1, 2, 4, 8, 10};
  std::vector<double> falling, flat;
  for (std::int64_t v : k) {
    falling.push_back(0.3 / std::sqrt(static_cast<double>(v)));
    flat.push_back(0.07);
  }
  EXPECT_NEAR(log_log_slope(k, falling), -0.5, 1e-12);
  EXPECT_NEAR(log_log_slope(k, flat), 0.0, 1e-12);
  EXPECT_TRUE(std::isnan(log_log_slope(k, {0.1, 0.0, 0.1, 0.1, 0.1})));
}

// The limit on draws whose errors are known: four 1-D draws G_b = G + beta + eta_b, eta = (+s, -s,
// +s, -s), so the mean is G + beta; the draws' variance is 4 s^2 / 3 and the limit
// sqrt(beta^2 - s^2 / 3). Relative to ||G|| = 1.
TEST(Diagnose, BiasLimitRemovesTheDrawsNoise) {
  const double beta = 0.5, s = 0.3;
  EstimatorCurve c;
  c.draw_errors = {beta + s, beta - s, beta + s, beta - s};
  c.k = {1, 2, 4};
  c.bias = {beta + s, beta, beta};
  EXPECT_NEAR(c.bias_limit(), std::sqrt(beta * beta - s * s / 3), 1e-12);
  EXPECT_NEAR(c.error(), beta, 1e-12);
  EXPECT_NEAR(c.error_sd(), std::sqrt(4 * s * s / 3), 1e-12);
  // All noise, no bias: the estimate is clamped at 0.
  c.bias.back() = 0.01;
  EXPECT_EQ(c.bias_limit(), 0.0);
}

// Which products and references each recipe gets: a forward-quantized reference exactly where the
// backward pass re-uses a forward-quantized operand (re-quantized, or nvidia's W reused transposed).
TEST(Diagnose, ReferencesFollowTheRecipe) {
  SyntheticLayer layer;
  const auto kinds = [&](const std::string& recipe, const RecipeOptions& options = {}) {
    std::vector<std::string> out;
    for (const EstimatorCurve& c : layer.measure(make_recipe(recipe, options), 2)) {
      out.push_back(fmt::format("{}/{}", gemm_name(c.product), reference_name(c.reference)));
      EXPECT_EQ(c.draw_errors.size(), 2u);
      EXPECT_EQ(c.k, (std::vector<std::int64_t>{1, 2}));
    }
    return out;
  };
  const std::vector<std::string> both = {"dgrad/exact", "dgrad/forward_quantized", "wgrad/exact", "wgrad/forward_quantized"};
  EXPECT_EQ(kinds("quartet2"), both);
  EXPECT_EQ(kinds("tetrajet2"), both);
  EXPECT_EQ(kinds("quartet1"), both);
  EXPECT_EQ(kinds("nvidia"), (std::vector<std::string>{"dgrad/exact", "dgrad/forward_quantized", "wgrad/exact"}));
  RecipeOptions backward_only;
  backward_only.quantize_forward = false;
  EXPECT_EQ(kinds("quartet2", backward_only), (std::vector<std::string>{"dgrad/exact", "wgrad/exact"}));
  RecipeOptions forward_only;
  forward_only.quantize_backward = false;
  EXPECT_TRUE(layer.measure(make_recipe("quartet2", forward_only), 2).empty());
  EXPECT_THROW(layer.measure(make_recipe("quartet2"), 1), Error);
}

// Unbiased backward quantizers (MS-EDEN and SR over fresh rotations; SR without a rotation, in
// nvidia's dgrad) against the product they average to: z = 1 within 5 rho, the bias falling with
// slope -0.5 (each bias_k^2 is within about rho of its expectation, which moves a fit over log2 k =
// 0..6 by far less than 0.05). quartet1-sr checks the trust-mask path of the reference.
class UnbiasedBackward : public ::testing::TestWithParam<std::string> {};

TEST_P(UnbiasedBackward, BiasFallsLikeOneOverSqrtKAgainstTheForwardQuantizedProduct) {
  SyntheticLayer layer;
  int checked = 0;
  for (const EstimatorCurve& c : layer.measure(make_recipe(GetParam()), 64)) {
    if (c.reference != GradientReference::forward_quantized) continue;
    SCOPED_TRACE(gemm_name(c.product));
    const DrawStatistic s = statistic(c);
    ASSERT_LT(s.rho, 0.05);  // the test has the power to see the biases below
    EXPECT_NEAR(s.z, 1.0, 5 * s.rho);
    EXPECT_NEAR(c.slope(), -0.5, 0.05);
    EXPECT_LT(c.bias.back(), 0.2 * c.bias.front());  // about 1/8 at k = 64
    ++checked;
  }
  EXPECT_EQ(checked, GetParam() == "nvidia" ? 1 : 2);
}

INSTANTIATE_TEST_SUITE_P(Recipes, UnbiasedBackward, ::testing::Values("quartet2", "tetrajet2", "quartet1-sr", "nvidia"),
                         [](const auto& param_info) { return testing::parameter_name(param_info.param); });

// Against the exact product the same draws level off at the forward pass's quantization error,
// computed here from the host quantizer alone: ||E (Q(W) - W)|| / ||E W|| for dgrad, ||E^T (Q(X) -
// X)|| / ||E^T X|| for wgrad. The limit's noise (about mean(e^2) rho / B in its square) and the
// references' BF16 rounding (~2^-9 per element) are far below the 2% allowed.
TEST(Diagnose, ForwardQuantizationIsABiasThatStays) {
  SyntheticLayer layer;
  for (const auto& [recipe, forward] : {std::pair{"quartet2", QuantizerKind::four_over_six},
                                        std::pair{"tetrajet2", QuantizerKind::rtn}}) {
    const std::vector<EstimatorCurve> curves = layer.measure(make_recipe(recipe), 64);
    for (LinearGemm product : {LinearGemm::dgrad, LinearGemm::wgrad}) {
      SCOPED_TRACE(fmt::format("{} {}", recipe, gemm_name(product)));
      const EstimatorCurve& c = curve(curves, product, GradientReference::exact);
      const double beta = layer.forward_quantization_bias(product, forward);
      EXPECT_GT(beta, 0.03);
      EXPECT_NEAR(c.bias_limit(), beta, 0.02 * beta);
      const DrawStatistic s = statistic(c);
      EXPECT_GT(s.z, 1 + 20 * s.rho);
      EXPECT_GT(c.slope(), -0.3);
      EXPECT_GT(c.bias.back(), 0.98 * beta);  // the mean of the draws does not get closer than the bias
    }
  }
}

// Biased backward quantizers, against the reference an unbiased one would average to: round to
// nearest after fresh rotations (quartet1's MXFP4 RTN; quartet2 with every backward quantizer
// replaced by NVFP4 RTN) keeps a bias that z shows many rho above 1; nvidia's wgrad rounds X^T to
// nearest under run-fixed signs (a deterministic error: against the exact product, its only
// reference). With nothing random left (nvidia with RTN backward) every draw is the same: the bias
// is the one draw's error at every k.
TEST(Diagnose, BiasedBackwardQuantizersLevelOff) {
  SyntheticLayer layer;
  RecipeOptions rtn;
  rtn.backward_quantizer = QuantizerKind::rtn;
  for (const Recipe& recipe : {make_recipe("quartet1"), make_recipe("quartet2", rtn)}) {
    for (const EstimatorCurve& c : layer.measure(recipe, 64)) {
      if (c.reference != GradientReference::forward_quantized) continue;
      SCOPED_TRACE(fmt::format("{} {}", recipe.name, gemm_name(c.product)));
      const DrawStatistic s = statistic(c);
      EXPECT_GT(s.z, 1 + 10 * s.rho);
    }
  }
  const EstimatorCurve nvidia_wgrad = curve(layer.measure(make_recipe("nvidia"), 64), LinearGemm::wgrad, GradientReference::exact);
  const DrawStatistic s = statistic(nvidia_wgrad);
  EXPECT_GT(s.z, 1 + 20 * s.rho);
  EXPECT_GT(nvidia_wgrad.bias_limit(), 0.03);

  for (const EstimatorCurve& c : layer.measure(make_recipe("nvidia", rtn), 16)) {
    SCOPED_TRACE(fmt::format("{} {}", gemm_name(c.product), reference_name(c.reference)));
    for (double e : c.draw_errors) EXPECT_EQ(e, c.draw_errors.front());
    for (double b : c.bias) EXPECT_NEAR(b, c.draw_errors.front(), 1e-12);
    EXPECT_NEAR(c.slope(), 0.0, 1e-9);
    EXPECT_NEAR(c.bias_limit(), c.draw_errors.front(), 1e-9);
  }
}

// The layers' means: the errors, each k's bias and the limits averaged, the slope fitted to the
// averaged curve; in the order measured.
TEST(Diagnose, MeansOverLayers) {
  const auto curve_of = [](LinearGemm product, GradientReference reference, double error, std::vector<double> bias) {
    EstimatorCurve c;
    c.product = product;
    c.reference = reference;
    c.draw_errors = {error, error};
    c.k = {1, 2};
    c.bias = std::move(bias);
    return c;
  };
  const std::vector<LayerEstimators> measured = {
      {"nvidia", "a", {curve_of(LinearGemm::dgrad, GradientReference::exact, 0.2, {0.2, 0.2})}},
      {"nvidia", "b", {curve_of(LinearGemm::dgrad, GradientReference::exact, 0.4, {0.4, 0.4})}},
      {"quartet2", "a", {curve_of(LinearGemm::wgrad, GradientReference::forward_quantized, 0.1, {0.1, 0.1 / std::sqrt(2.0)}),
                         curve_of(LinearGemm::dgrad, GradientReference::exact, 0.3, {0.3, 0.3})}}};
  const std::vector<MeanEstimator> means = mean_over_layers(measured);
  ASSERT_EQ(means.size(), 3u);
  EXPECT_EQ(means[0].recipe, "nvidia");
  EXPECT_EQ(means[0].layers, 2);
  EXPECT_NEAR(means[0].error, 0.3, 1e-12);
  EXPECT_NEAR(means[0].bias[1], 0.3, 1e-12);
  EXPECT_NEAR(means[0].slope, 0.0, 1e-12);
  EXPECT_NEAR(means[0].bias_limit, 0.3, 1e-12);  // every draw alike: the limit is the error
  EXPECT_EQ(means[1].recipe, "quartet2");
  EXPECT_EQ(means[1].product, LinearGemm::dgrad);  // dgrad before wgrad
  EXPECT_EQ(means[2].product, LinearGemm::wgrad);
  EXPECT_NEAR(means[2].slope, -0.5, 1e-12);
}

// What diagnose.json keeps of the means reads back as it was written (`quartet plot --diagnose`),
// an undefined figure (null in the file) as NaN.
TEST(Diagnose, MeansReadBackFromTheirJson) {
  MeanEstimator a;
  a.recipe = "quartet2";
  a.product = LinearGemm::wgrad;
  a.reference = GradientReference::forward_quantized;
  a.layers = 3;
  a.error = 0.25;
  a.k = {1, 2, 4};
  a.bias = {0.5, std::nan(""), 0.125};
  a.slope = std::nan("");
  a.bias_limit = 0.0625;
  MeanEstimator b = a;
  b.recipe = "nvidia";
  b.product = LinearGemm::dgrad;
  b.reference = GradientReference::exact;
  const nlohmann::json written = nlohmann::json::parse(estimator_means_json({a, b}).dump());
  const std::vector<MeanEstimator> read = estimator_means_from_json(written, "d.json");
  ASSERT_EQ(read.size(), 2u);
  EXPECT_EQ(read[0].recipe, "quartet2");
  EXPECT_EQ(read[0].product, LinearGemm::wgrad);
  EXPECT_EQ(read[0].reference, GradientReference::forward_quantized);
  EXPECT_EQ(read[0].layers, 3);
  EXPECT_EQ(read[0].error, 0.25);
  EXPECT_EQ(read[0].k, (std::vector<std::int64_t>{1, 2, 4}));
  ASSERT_EQ(read[0].bias.size(), 3u);
  EXPECT_EQ(read[0].bias[0], 0.5);
  EXPECT_TRUE(std::isnan(read[0].bias[1]));
  EXPECT_TRUE(std::isnan(read[0].slope));
  EXPECT_EQ(read[0].bias_limit, 0.0625);
  EXPECT_EQ(read[1].recipe, "nvidia");
  EXPECT_EQ(read[1].product, LinearGemm::dgrad);
  EXPECT_EQ(read[1].reference, GradientReference::exact);

  nlohmann::json forward = written;
  forward[1]["product"] = "forward";  // measured only for the backward products
  EXPECT_THROW(
      {
        try {
          estimator_means_from_json(forward, "d.json");
        } catch (const Error& e) {
          EXPECT_NE(std::string(e.what()).find("d.json: mean row 1: unknown product 'forward'"), std::string::npos)
              << e.what();
          throw;
        }
      },
      Error);
}

// The captured inputs are the layers' real X and E: for every layer of a tiny model, the weight
// gradient the model accumulated in its BF16 pass is E^T X of the captured tensors (computed here
// in double: equal up to BF16 rounding). The model reuses the residual stream's gradient buffer,
// which an uncopied E of o_proj and down_proj would show.
TEST(Diagnose, CapturedInputsAreTheLayersOwn) {
  std::unique_ptr<Backend> be = make_cpu_backend();
  LlamaModel model(*be, llama_preset("tiny", 257), make_recipe("bf16"), 5);
  model.zero_grads();
  const std::int64_t batch = 2, seq = 32, n = batch * seq;
  std::vector<std::int32_t> tokens(n), targets(n);
  for (std::int64_t i = 0; i < n; ++i) {
    tokens[static_cast<std::size_t>(i)] = static_cast<std::int32_t>((i * 37 + 11) % 257);
    targets[static_cast<std::size_t>(i)] = static_cast<std::int32_t>((i * 53 + 7) % 257);
  }
  const std::vector<LinearCapture> layers = capture_linear_inputs(*be, model, tokens, targets, batch, seq, 1.0 / n);
  ASSERT_EQ(layers.size(), 8u);
  const char* kinds[] = {"self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj"};
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const LinearCapture& l = layers[i];
    const std::string kind = kinds[i % 4];
    EXPECT_EQ(l.layer, fmt::format("layers.{}.{}", i / 4, kind.substr(kind.find('.') + 1)));
    EXPECT_EQ(l.call.random.layer, i);
    const Parameter& p = model.parameter(fmt::format("model.layers.{}.{}.weight", i / 4, kind));
    const std::int64_t out = p.value.dim(0), in = p.value.dim(1);
    ASSERT_EQ(l.call.x.shape(), (Shape{n, in}));
    ASSERT_EQ(l.call.dy.shape(), (Shape{n, out}));
    EXPECT_EQ(be->download(l.call.w), be->download(p.value));
    const std::vector<double> expected = matmul_tn(be->download(l.call.dy), true, be->download(l.call.x), true, out, in, n);
    EXPECT_LT(norm(minus(be->download(p.grad), expected)) / norm(expected), 1e-2) << l.layer;
  }
  const std::vector<LinearCapture> some = capture_linear_inputs(
      *be, model, tokens, targets, batch, seq, 1.0 / n, [](const std::string& name) { return name.ends_with("o_proj"); });
  ASSERT_EQ(some.size(), 2u);
  EXPECT_EQ(some[0].layer, "layers.0.o_proj");
  EXPECT_EQ(some[1].layer, "layers.1.o_proj");
}

}  // namespace
}  // namespace quartet

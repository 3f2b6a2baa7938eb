#include "quartet/train/diagnose.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <optional>
#include <tuple>

#include "quartet/error.h"
#include "quartet/numerics/quantizer.h"
#include "quartet/train/diagnostics.h"
#include "quartet/util/json_number.h"

namespace quartet {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

nlohmann::ordered_json numbers_or_null(const std::vector<double>& values) {
  nlohmann::ordered_json a = nlohmann::ordered_json::array();
  for (double v : values) a.push_back(number_or_null<nlohmann::ordered_json>(v));
  return a;
}

// Keeps the inputs of every backward call it watches (the exact pass runs no quantized GEMM, so
// observe() sees nothing there).
class InputCapture : public LinearProbe {
 public:
  InputCapture(Backend& backend, const std::function<bool(const std::string&)>& keep) : backend_(backend), keep_(keep) {}
  void observe(const std::string&, const ProbedGemm&) override {}
  void observe_call(const std::string& layer, const LinearCall& call) override {
    if (keep_ && !keep_(layer)) return;
    LinearCapture c{layer, call};
    // The model reuses gradient buffers (the residual stream's) after the call: own copies.
    c.call.x = copy_of(call.x);
    c.call.dy = copy_of(call.dy);
    captures.push_back(std::move(c));
  }
  std::vector<LinearCapture> captures;

 private:
  Tensor copy_of(const Tensor& t) {
    Tensor c = backend_.empty(t.shape(), t.dtype());
    backend_.copy(c, t);
    return c;
  }
  Backend& backend_;
  const std::function<bool(const std::string&)>& keep_;
};

// Keeps the exact product of each backward GEMM the first time the layer shows it: the BF16
// product of the real operands, computed by the layer itself (the same G as `--diagnostics`).
class ExactProducts : public LinearProbe {
 public:
  explicit ExactProducts(Backend& backend) : backend_(backend) {}
  void observe(const std::string&, const ProbedGemm& gemm) override {
    if (gemm.gemm == LinearGemm::forward) return;
    std::optional<std::vector<double>>& slot = gemm.gemm == LinearGemm::dgrad ? dgrad : wgrad;
    if (!slot) slot = backend_.download(gemm.exact_product());
  }
  std::optional<std::vector<double>> dgrad, wgrad;

 private:
  Backend& backend_;
};

// The product of E with the forward-quantized operand the backward pass re-uses (W for dgrad, X for
// wgrad), as the recipe's backward pass goes on with it: in the forward rotation's domain, through
// the trust mask and the rotation back (Quartet I). The operand is dequantized on the host and
// multiplied by the BF16 GEMM, as the exact product is.
std::vector<double> forward_quantized_product(Backend& backend, const Recipe& recipe, LinearGemm product,
                                              const LinearCall& in, const LinearSaved& saved, const Tensor& like) {
  const bool dgrad = product == LinearGemm::dgrad;
  const QTensor& operand = dgrad ? saved.wq : saved.xq;
  if (!operand.defined()) throw Error("diagnose: the forward pass kept no quantized operand to compare with");
  const std::vector<float> values = dequantize(backend.download_quantized(operand));
  Tensor dequantized = backend.empty({operand.rows, operand.cols}, DType::f32);
  backend.upload(dequantized, std::vector<double>(values.begin(), values.end()));
  Tensor g = backend.empty(like.shape(), like.dtype());
  backend.gemm(g, in.dy, /*a_transposed=*/!dgrad, dequantized, /*b_transposed=*/true, /*accumulate=*/false);
  if (recipe.backward_through_trust_mask) {
    const Rotation forward = recipe.fwd_x.rotation ? Rotation::hadamard(recipe.fwd_x.rotation) : Rotation::none();
    backend.apply_trust_mask_and_unrotate(g, dgrad ? saved.xq : saved.wq, forward);
  }
  return backend.download(g);
}

// One product's running sum over the draws and its curves against each reference.
struct ProductDraws {
  LinearGemm product;
  std::vector<double> sum;
  std::vector<std::pair<std::vector<double>, EstimatorCurve>> references;  // G and its curve

  void add(const std::vector<double>& draw, std::int64_t count, const std::vector<std::int64_t>& ks) {
    if (sum.empty()) sum.assign(draw.size(), 0.0);
    for (std::size_t i = 0; i < draw.size(); ++i) sum[i] += draw[i];
    const bool at_k = std::find(ks.begin(), ks.end(), count) != ks.end();
    std::vector<double> mean;
    if (at_k) {
      mean.resize(sum.size());
      for (std::size_t i = 0; i < sum.size(); ++i) mean[i] = sum[i] / static_cast<double>(count);
    }
    for (auto& [g, curve] : references) {
      curve.draw_errors.push_back(compare_vectors(draw, g).relative_error);
      if (at_k) {
        curve.k.push_back(count);
        curve.bias.push_back(compare_vectors(mean, g).relative_error);
      }
    }
  }
};

}  // namespace

const char* reference_name(GradientReference reference) {
  return reference == GradientReference::exact ? "exact" : "forward_quantized";
}

std::vector<LinearCapture> capture_linear_inputs(Backend& backend, LlamaModel& model,
                                                 const std::vector<std::int32_t>& tokens,
                                                 const std::vector<std::int32_t>& targets, std::int64_t batch,
                                                 std::int64_t seq, double grad_scale,
                                                 const std::function<bool(const std::string&)>& keep) {
  const std::int64_t n = batch * seq;
  if (static_cast<std::int64_t>(tokens.size()) != n || static_cast<std::int64_t>(targets.size()) != n) {
    throw Error(fmt::format("capture_linear_inputs: {} tokens and {} targets for {} x {}", tokens.size(), targets.size(),
                            batch, seq));
  }
  Tensor tok = backend.empty({n}, DType::i32), tgt = backend.empty({n}, DType::i32);
  backend.upload_tokens(tok, tokens);
  backend.upload_tokens(tgt, targets);
  Tensor loss = backend.zeros({1}, DType::f64);
  InputCapture capture(backend, keep);
  model.forward_backward(tok, tgt, batch, seq, grad_scale, /*call=*/0, loss, &capture);
  backend.raise_pending_errors();
  // The backward pass meets the layers last block first: back into the model's order.
  std::stable_sort(capture.captures.begin(), capture.captures.end(), [](const LinearCapture& a, const LinearCapture& b) {
    return a.call.random.layer < b.call.random.layer;
  });
  return std::move(capture.captures);
}

double EstimatorCurve::error() const {
  if (draw_errors.empty()) return kNaN;
  double s = 0;
  for (double e : draw_errors) s += e;
  return s / static_cast<double>(draw_errors.size());
}

double EstimatorCurve::error_sd() const {
  if (draw_errors.size() < 2) return kNaN;
  const double m = error();
  double s = 0;
  for (double e : draw_errors) s += (e - m) * (e - m);
  return std::sqrt(s / static_cast<double>(draw_errors.size() - 1));
}

double EstimatorCurve::slope() const { return log_log_slope(k, bias); }

double EstimatorCurve::bias_limit() const {
  const std::size_t n = draw_errors.size();
  if (n < 2 || bias.empty() || k.back() != static_cast<std::int64_t>(n)) return kNaN;
  // In units of ||G||^2: sum_b ||G_b - mean||^2 = sum_b ||G_b - G||^2 - n ||mean - G||^2.
  const double b2 = bias.back() * bias.back();
  double e2 = 0;
  for (double e : draw_errors) e2 += e * e;
  const double variance = std::max(0.0, e2 - static_cast<double>(n) * b2) / static_cast<double>(n - 1);
  return std::sqrt(std::max(0.0, b2 - variance / static_cast<double>(n)));
}

std::vector<std::int64_t> bias_draw_counts(std::int64_t draws) {
  std::vector<std::int64_t> ks;
  for (std::int64_t k = 1; k < draws; k *= 2) ks.push_back(k);
  if (draws >= 1) ks.push_back(draws);
  return ks;
}

double log_log_slope(const std::vector<std::int64_t>& x, const std::vector<double>& y) {
  if (x.size() != y.size() || x.size() < 2) return kNaN;
  double sx = 0, sy = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    if (!(x[i] > 0) || !(y[i] > 0) || !std::isfinite(y[i])) return kNaN;
    sx += std::log(static_cast<double>(x[i]));
    sy += std::log(y[i]);
  }
  const double n = static_cast<double>(x.size()), mx = sx / n, my = sy / n;
  double sxx = 0, sxy = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double dx = std::log(static_cast<double>(x[i])) - mx;
    sxx += dx * dx;
    sxy += dx * (std::log(y[i]) - my);
  }
  return sxx > 0 ? sxy / sxx : kNaN;
}

std::vector<EstimatorCurve> measure_estimator(Backend& backend, const Recipe& recipe, const LinearCapture& layer,
                                              std::int64_t draws, std::uint64_t seed,
                                              const std::function<void(std::int64_t)>& on_draw) {
  if (draws < 2) throw Error(fmt::format("diagnose: {} draws; a bias needs at least 2", draws));
  if (draws > std::numeric_limits<std::uint32_t>::max()) throw Error(fmt::format("diagnose: {} draws are too many", draws));
  for (const OperandRule* rule : {&recipe.fwd_x, &recipe.fwd_w}) {
    if (rule->quantized() && is_stochastic(rule->quantizer->kind)) {
      throw Error(fmt::format("diagnose: recipe {} quantizes its forward pass stochastically ({}); the backward "
                              "estimators are measured against one forward-quantized operand",
                              recipe.name, quantizer_name(rule->quantizer->kind)));
    }
  }
  const LinearCall& in = layer.call;
  const auto random = [&](std::int64_t b) {
    return LinearRandom{seed, in.random.layer, static_cast<std::uint32_t>(b)};
  };
  ExactProducts exact(backend);
  const LinearProbeHook hook{&exact, layer.layer};
  // The forward quantizers are deterministic: one forward pass serves every draw.
  Tensor y = backend.empty({in.x.dim(0), in.w.dim(0)}, backend.activation_dtype());
  LinearSaved saved;
  linear_forward(backend, recipe, in.x, in.w, y, saved, random(0), in.w_bf16, hook);
  Tensor dx = backend.empty(in.x.shape(), backend.activation_dtype());
  Tensor dw = backend.empty(in.w.shape(), backend.param_dtype());

  const std::vector<std::int64_t> ks = bias_draw_counts(draws);
  std::vector<ProductDraws> products;
  for (std::int64_t b = 0; b < draws; ++b) {
    backend.fill(dw, 0.0);  // dW accumulates: this draw's product alone
    linear_backward(backend, recipe, in.dy, in.w, saved, dx, dw, random(b), in.w_bf16, hook);
    if (b == 0) {
      // The products the recipe quantizes (the layer showed them to the probe), and their references.
      const struct {
        LinearGemm gemm;
        const std::optional<std::vector<double>>& exact_product;
        const OperandRule& reused;
        const Tensor& output;
      } candidates[] = {{LinearGemm::dgrad, exact.dgrad, recipe.dgrad_wt, dx},
                        {LinearGemm::wgrad, exact.wgrad, recipe.wgrad_xt, dw}};
      for (const auto& c : candidates) {
        if (!c.exact_product) continue;
        ProductDraws p{c.gemm, {}, {}};
        p.references.push_back({*c.exact_product, EstimatorCurve{c.gemm, GradientReference::exact, {}, {}, {}}});
        if (c.reused.source != OperandSource::high_precision) {
          p.references.push_back({forward_quantized_product(backend, recipe, c.gemm, in, saved, c.output),
                                  EstimatorCurve{c.gemm, GradientReference::forward_quantized, {}, {}, {}}});
        }
        products.push_back(std::move(p));
      }
    }
    for (ProductDraws& p : products) p.add(backend.download(p.product == LinearGemm::dgrad ? dx : dw), b + 1, ks);
    if (on_draw) on_draw(b + 1);
  }
  std::vector<EstimatorCurve> curves;
  for (ProductDraws& p : products) {
    for (auto& [g, curve] : p.references) curves.push_back(std::move(curve));
  }
  return curves;
}

std::vector<MeanEstimator> mean_over_layers(const std::vector<LayerEstimators>& measured) {
  std::vector<MeanEstimator> means;
  std::map<std::tuple<std::string, LinearGemm, GradientReference>, std::size_t> index;
  for (const LayerEstimators& l : measured) {
    for (const EstimatorCurve& c : l.curves) {
      const auto key = std::make_tuple(l.recipe, c.product, c.reference);
      auto it = index.find(key);
      if (it == index.end()) {
        it = index.emplace(key, means.size()).first;
        MeanEstimator m;
        m.recipe = l.recipe;
        m.product = c.product;
        m.reference = c.reference;
        m.k = c.k;
        m.bias.assign(c.bias.size(), 0.0);
        means.push_back(std::move(m));
      }
      MeanEstimator& m = means[it->second];
      if (m.k != c.k) throw Error(fmt::format("diagnose: layer {} was measured with other draw counts", l.layer));
      ++m.layers;
      m.error += c.error();
      m.bias_limit += c.bias_limit();
      for (std::size_t i = 0; i < c.bias.size(); ++i) m.bias[i] += c.bias[i];
    }
  }
  for (MeanEstimator& m : means) {
    const double n = static_cast<double>(m.layers);
    m.error /= n;
    m.bias_limit /= n;
    for (double& b : m.bias) b /= n;
    m.slope = log_log_slope(m.k, m.bias);
  }
  // Recipes in the order measured; within one, dgrad before wgrad, exact before forward_quantized.
  std::map<std::string, std::size_t> recipe_order;
  for (const LayerEstimators& l : measured) recipe_order.emplace(l.recipe, recipe_order.size());
  std::stable_sort(means.begin(), means.end(), [&](const MeanEstimator& a, const MeanEstimator& b) {
    return std::tuple(recipe_order.at(a.recipe), a.product, a.reference) <
           std::tuple(recipe_order.at(b.recipe), b.product, b.reference);
  });
  return means;
}

namespace {

nlohmann::ordered_json curve_json(const std::string& recipe, const std::string& layer_key, const nlohmann::ordered_json& layer,
                                  LinearGemm product, GradientReference reference, double error,
                                  const std::vector<std::int64_t>& k, const std::vector<double>& bias, double slope,
                                  double bias_limit) {
  nlohmann::ordered_json j;
  j["recipe"] = recipe;
  j[layer_key] = layer;
  j["product"] = gemm_name(product);
  j["reference"] = reference_name(reference);
  j["error"] = number_or_null<nlohmann::ordered_json>(error);
  j["k"] = k;
  j["bias"] = numbers_or_null(bias);
  j["slope"] = number_or_null<nlohmann::ordered_json>(slope);
  j["bias_limit"] = number_or_null<nlohmann::ordered_json>(bias_limit);
  return j;
}

}  // namespace

nlohmann::ordered_json estimator_rows_json(const std::vector<LayerEstimators>& measured) {
  nlohmann::ordered_json rows = nlohmann::ordered_json::array();
  for (const LayerEstimators& l : measured) {
    for (const EstimatorCurve& c : l.curves) {
      nlohmann::ordered_json j = curve_json(l.recipe, "layer", l.layer, c.product, c.reference, c.error(), c.k, c.bias,
                                            c.slope(), c.bias_limit());
      j["error_sd"] = number_or_null<nlohmann::ordered_json>(c.error_sd());
      rows.push_back(std::move(j));
    }
  }
  return rows;
}

namespace {

double number_or_nan(const nlohmann::json& v) {
  return v.is_null() ? std::numeric_limits<double>::quiet_NaN() : v.get<double>();
}

}  // namespace

std::vector<MeanEstimator> estimator_means_from_json(const nlohmann::json& mean, const std::string& where) {
  if (!mean.is_array() || mean.empty()) throw Error(fmt::format("{}: \"mean\" is not a list of rows", where));
  std::vector<MeanEstimator> means;
  for (std::size_t i = 0; i < mean.size(); ++i) {
    const nlohmann::json& j = mean[i];
    MeanEstimator m;
    try {
      m.recipe = j.at("recipe").get<std::string>();
      const std::string product = j.at("product").get<std::string>(), reference = j.at("reference").get<std::string>();
      if (product == gemm_name(LinearGemm::dgrad)) {
        m.product = LinearGemm::dgrad;
      } else if (product == gemm_name(LinearGemm::wgrad)) {
        m.product = LinearGemm::wgrad;
      } else {
        throw Error(fmt::format("{}: mean row {}: unknown product '{}' (dgrad or wgrad)", where, i, product));
      }
      if (reference == reference_name(GradientReference::exact)) {
        m.reference = GradientReference::exact;
      } else if (reference == reference_name(GradientReference::forward_quantized)) {
        m.reference = GradientReference::forward_quantized;
      } else {
        throw Error(fmt::format("{}: mean row {}: unknown reference '{}' (exact or forward_quantized)", where, i,
                                reference));
      }
      m.layers = j.at("layers").get<std::int64_t>();
      m.error = number_or_nan(j.at("error"));
      m.k = j.at("k").get<std::vector<std::int64_t>>();
      for (const nlohmann::json& b : j.at("bias")) m.bias.push_back(number_or_nan(b));
      m.slope = number_or_nan(j.at("slope"));
      m.bias_limit = number_or_nan(j.at("bias_limit"));
    } catch (const nlohmann::json::exception& e) {
      throw Error(fmt::format("{}: mean row {}: a field is missing or has the wrong type: {}", where, i, e.what()));
    }
    // The names go into the gnuplot script: only the recipes `quartet diagnose` measures.
    const std::vector<std::string>& known = recipe_names();
    if (std::find(known.begin(), known.end(), m.recipe) == known.end()) {
      throw Error(fmt::format("{}: mean row {}: unknown recipe '{}'", where, i, m.recipe));
    }
    if (m.k.empty()) throw Error(fmt::format("{}: mean row {}: no draw counts (k)", where, i));
    for (std::size_t c = 0; c < m.k.size(); ++c) {
      if (m.k[c] < 1 || (c > 0 && m.k[c] <= m.k[c - 1])) {
        throw Error(fmt::format("{}: mean row {}: the draw counts (k) must rise from 1 or more", where, i));
      }
    }
    if (m.k.size() != m.bias.size()) {
      throw Error(fmt::format("{}: mean row {}: {} draw counts (k) but {} bias values", where, i, m.k.size(),
                              m.bias.size()));
    }
    if (i > 0 && m.k != means.front().k) {
      throw Error(fmt::format("{}: mean row {}: its draw counts (k) differ from the first row's", where, i));
    }
    means.push_back(std::move(m));
  }
  return means;
}

nlohmann::ordered_json estimator_means_json(const std::vector<MeanEstimator>& means) {
  nlohmann::ordered_json rows = nlohmann::ordered_json::array();
  for (const MeanEstimator& m : means) {
    rows.push_back(curve_json(m.recipe, "layers", m.layers, m.product, m.reference, m.error, m.k, m.bias, m.slope,
                              m.bias_limit));
  }
  return rows;
}

}  // namespace quartet

// Quantization diagnostics (`quartet train --diagnostics N`, docs/diagnostics.md): the figures
// against values computed here independently, the probe's silence (a probed layer and a run with
// diagnostics are the same bits as without), and the metrics.jsonl records.
#include "quartet/train/diagnostics.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <set>
#include <sstream>

#include "quartet/error.h"
#include "quartet/nn/linear.h"
#include "quartet/numerics/bf16.h"
#include "quartet/numerics/quantizer.h"
#include "quartet/train/trainer.h"
#include "quartet/util/files.h"
#include "support/gradcheck.h"
#include "support/temp_dir.h"

namespace quartet {
namespace {

using testing::matmul_tn;
using testing::minus;
using testing::norm;
using testing::random_values;

// A probe that keeps what it was shown: the library's figures, and the operands themselves (their
// tensors stay alive in the copies) for the test's own computations.
class RecordingProbe : public LinearProbe {
 public:
  explicit RecordingProbe(Backend& backend, std::int64_t token_limit = 0) : backend_(backend), token_limit_(token_limit) {}
  void observe(const std::string& layer, const ProbedGemm& gemm) override {
    layers.push_back(layer);
    figures.push_back(measure_gemm(backend_, gemm, token_limit_));
    operands.push_back({gemm.a, gemm.b});
  }
  const GemmDiagnostics& of(LinearGemm g) const {
    for (const GemmDiagnostics& d : figures) {
      if (d.gemm == g) return d;
    }
    throw Error("no such GEMM was probed");
  }
  const std::pair<ProbedOperand, ProbedOperand>& operands_of(LinearGemm g) const {
    for (std::size_t i = 0; i < figures.size(); ++i) {
      if (figures[i].gemm == g) return operands[i];
    }
    throw Error("no such GEMM was probed");
  }
  std::vector<std::string> layers;
  std::vector<GemmDiagnostics> figures;
  std::vector<std::pair<ProbedOperand, ProbedOperand>> operands;

 private:
  Backend& backend_;
  std::int64_t token_limit_;
};

std::vector<double> rounded_to_bf16(std::vector<double> v) {
  for (double& x : v) x = round_to_bf16(static_cast<float>(x));
  return v;
}

// One linear layer on the CPU backend: m tokens, k inputs, n outputs (multiples of 128, so that
// every recipe's rotations fit), the inputs Gaussian.
struct LayerCase {
  std::int64_t m, k, n;
  std::unique_ptr<Backend> be = make_cpu_backend();
  Tensor x, w, dy, y, dx, dw;
  LinearSaved saved;

  LayerCase(std::int64_t tokens, std::int64_t inputs, std::int64_t outputs) : m(tokens), k(inputs), n(outputs) {
    x = be->empty({m, k}, DType::bf16);
    w = be->empty({n, k}, DType::f32);
    dy = be->empty({m, n}, DType::bf16);
    be->upload(x, random_values(m * k, 31));
    be->upload(w, random_values(n * k, 32, 0.1));
    be->upload(dy, random_values(m * n, 33, 0.01));
    y = be->empty({m, n}, DType::bf16);
    dx = be->empty({m, k}, DType::bf16);
    dw = be->zeros({n, k}, DType::f32);
  }
  void run(const Recipe& recipe, LinearProbe* probe) {
    const LinearRandom random{5, 1, 7};
    linear_forward(*be, recipe, x, w, y, saved, random, Tensor{}, {probe, "layer"});
    linear_backward(*be, recipe, dy, w, saved, dx, dw, random, Tensor{}, {probe, "layer"});
  }
};

struct TinyLayer : LayerCase {
  static constexpr std::int64_t M = 128, K = 128, N = 128;
  TinyLayer() : LayerCase(M, K, N) {}
};

// The exact product of the layer's GEMM g, computed here: BF16 weights, as the BF16 GEMM reads
// them (its BF16 output rounding moves the figures by far less than the tests' tolerances).
std::vector<double> exact_product(const LayerCase& t, LinearGemm g) {
  const std::vector<double> x = t.be->download(t.x), w = rounded_to_bf16(t.be->download(t.w)), dy = t.be->download(t.dy);
  switch (g) {
    case LinearGemm::forward: return matmul_tn(x, false, w, false, t.m, t.n, t.k);
    case LinearGemm::dgrad: return matmul_tn(dy, false, w, true, t.m, t.k, t.n);
    case LinearGemm::wgrad: return matmul_tn(dy, true, x, true, t.n, t.k, t.m);
  }
  throw Error("unknown GEMM");
}

TEST(Diagnostics, CompareVectorsOnKnownPairs) {
  const std::vector<double> v = random_values(1000, 1);
  const VectorComparison same = compare_vectors(v, v);
  EXPECT_EQ(same.relative_error, 0.0);
  EXPECT_EQ(same.norm_ratio, 1.0);
  EXPECT_NEAR(same.cosine, 1.0, 1e-15);
  const VectorComparison orthogonal = compare_vectors({1, 0}, {0, 1});
  EXPECT_EQ(orthogonal.cosine, 0.0);
  EXPECT_EQ(orthogonal.norm_ratio, 1.0);
  EXPECT_DOUBLE_EQ(orthogonal.relative_error, std::sqrt(2.0));
  const VectorComparison doubled = compare_vectors({2, 4, -6}, {1, 2, -3});
  EXPECT_DOUBLE_EQ(doubled.cosine, 1.0);
  EXPECT_DOUBLE_EQ(doubled.norm_ratio, 2.0);
  EXPECT_DOUBLE_EQ(doubled.relative_error, 1.0);
  const VectorComparison opposite = compare_vectors({-1, -2}, {1, 2});
  EXPECT_DOUBLE_EQ(opposite.cosine, -1.0);
  // Against a zero vector nothing relative is defined (null in metrics.jsonl)...
  const VectorComparison zero = compare_vectors({1, 2}, {0, 0});
  EXPECT_TRUE(std::isnan(zero.relative_error) && std::isnan(zero.norm_ratio) && std::isnan(zero.cosine));
  // ...except that zero against zero is no error at all.
  EXPECT_EQ(compare_vectors({0, 0}, {0, 0}).relative_error, 0.0);
  EXPECT_THROW(compare_vectors({1}, {1, 2}), Error);
}

// The forward operands' errors are those of the dequantized operands, computed here from the
// host quantizer (4/6 is deterministic: the same codes as the layer's).
TEST(Diagnostics, ForwardOperandErrorIsThatOfTheDequantizedOperand) {
  TinyLayer t;
  RecordingProbe probe(*t.be);
  const Recipe recipe = make_recipe("quartet2");
  t.run(recipe, &probe);
  const GemmDiagnostics& f = probe.of(LinearGemm::forward);
  EXPECT_EQ(f.a_name, "x");
  EXPECT_EQ(f.b_name, "w");
  for (const auto& [tensor, rows, figure] : {std::tuple{t.x, TinyLayer::M, f.a_error}, std::tuple{t.w, TinyLayer::N, f.b_error}}) {
    const std::vector<double> exact = t.be->download(tensor);
    const std::vector<float> exact_f(exact.begin(), exact.end());
    const QuantizedTensor q = quantize(ConstMatrixView(exact_f.data(), rows, TinyLayer::K),
                                       QuantizerSpec::defaults(QuantizerKind::four_over_six), Rotation::none(), {});
    const std::vector<float> deq_f = dequantize(q);
    const std::vector<double> deq(deq_f.begin(), deq_f.end());
    const double expected = norm(minus(deq, exact)) / norm(exact);
    EXPECT_NEAR(figure, expected, 1e-12 * expected);
    EXPECT_GT(figure, 0.03);  // 4-bit: a few per cent
    EXPECT_LT(figure, 0.2);
  }
  // The output against the exact product computed here.
  const std::vector<double> exact_y = exact_product(t, LinearGemm::forward);
  const std::vector<double> y = t.be->download(t.y);
  EXPECT_NEAR(f.product.relative_error, norm(minus(y, exact_y)) / norm(exact_y), 2e-3);
  EXPECT_NEAR(f.product.cosine, testing::dot(y, exact_y) / (norm(y) * norm(exact_y)), 1e-4);
  EXPECT_NEAR(f.product.norm_ratio, norm(y) / norm(exact_y), 1e-3);
}

// The backward figures of the unbiased MS-EDEN recipe: each operand's error recomputed here in the
// rotated space (the exact operand rotated, the dequantized one left as the GEMM saw it), and the
// products' cosine and norm ratio from the layer's own dX and dW against exact products computed
// here. Unbiased 4-bit operands give a product close in direction (cosine > 0.97, about 0.99
// measured) and in norm (within 10%).
TEST(Diagnostics, BackwardFiguresOfMsEdenMatchIndependentProducts) {
  TinyLayer t;
  RecordingProbe probe(*t.be);
  t.run(make_recipe("quartet2"), &probe);
  ASSERT_EQ(probe.figures.size(), 3u);
  for (LinearGemm g : {LinearGemm::dgrad, LinearGemm::wgrad}) {
    SCOPED_TRACE(gemm_name(g));
    const auto& [a, b] = probe.operands_of(g);
    const GemmDiagnostics& d = probe.of(g);
    for (const auto& [operand, figure] : {std::pair{a, d.a_error}, std::pair{b, d.b_error}}) {
      const std::vector<double> exact_raw = t.be->download(operand.exact);
      const std::int64_t rows = operand.quantized.rows, cols = operand.quantized.cols;
      std::vector<float> exact(static_cast<std::size_t>(rows * cols));  // the operand's layout
      for (std::int64_t r = 0; r < rows; ++r) {
        for (std::int64_t c = 0; c < cols; ++c) {
          exact[static_cast<std::size_t>(r * cols + c)] =
              static_cast<float>(exact_raw[static_cast<std::size_t>(operand.transposed ? c * rows + r : r * cols + c)]);
        }
      }
      ASSERT_EQ(operand.rotation.size, 128);
      rotate_rows(exact.data(), rows, cols, cols, operand.rotation);
      const std::vector<float> deq_f = dequantize(t.be->download_quantized(operand.quantized));
      const std::vector<double> deq(deq_f.begin(), deq_f.end()), ref(exact.begin(), exact.end());
      const double expected = norm(minus(deq, ref)) / norm(ref);
      EXPECT_NEAR(figure, expected, 1e-5 * expected) << operand.name;
      EXPECT_GT(figure, 0.03) << operand.name;
      EXPECT_LT(figure, 0.3) << operand.name;
    }
  }
  for (const auto& [g, got, exact] : {std::tuple{LinearGemm::dgrad, t.be->download(t.dx), exact_product(t, LinearGemm::dgrad)},
                                      std::tuple{LinearGemm::wgrad, t.be->download(t.dw), exact_product(t, LinearGemm::wgrad)}}) {
    SCOPED_TRACE(gemm_name(g));
    const VectorComparison& p = probe.of(g).product;
    EXPECT_NEAR(p.cosine, testing::dot(got, exact) / (norm(got) * norm(exact)), 1e-4);
    EXPECT_NEAR(p.norm_ratio, norm(got) / norm(exact), 2e-3);
    EXPECT_NEAR(p.relative_error, norm(minus(got, exact)) / norm(exact), 2e-3);
    EXPECT_GT(p.cosine, 0.97);
    EXPECT_NEAR(p.norm_ratio, 1.0, 0.1);
    // ||a - b||^2 / ||b||^2 = r^2 + 1 - 2 r cos: the three figures agree with each other.
    EXPECT_NEAR(p.relative_error * p.relative_error,
                p.norm_ratio * p.norm_ratio + 1 - 2 * p.norm_ratio * p.cosine, 1e-9);
  }
}

// With a token limit the activations and their gradients are measured on the micro-batch's first
// tokens: X, E and the forward and dgrad products on their first rows, Eᵀ and Xᵀ on their first
// columns; the weights (W, Wᵀ) and the weight gradient whole. A layer of 384 tokens and 256
// outputs (more rows than the limit in every tensor) measured with a limit of 128; each figure
// recomputed here from the corner of the whole dequantized operand, in the domain the GEMM saw.
// Tokens 128 and on are 10^5 times larger, so that the first tokens' block scales sit near the
// bottom of E4M3's range, relative to the tensor scale, and their figures differ from the whole
// tensors' (products: by 0.0046 to over 0.02 here, against a tolerance of 0.002): a limit that is
// not applied fails.
class TokenLimit : public ::testing::TestWithParam<std::string> {};

TEST_P(TokenLimit, MeasuresTheFirstTokens) {
  constexpr std::int64_t kLimit = 128;
  LayerCase t(384, 128, 256);
  for (Tensor* tensor : {&t.x, &t.dy}) {
    std::vector<double> v = t.be->download(*tensor);
    const std::int64_t width = tensor->dim(1);
    for (std::size_t i = static_cast<std::size_t>(kLimit * width); i < v.size(); ++i) v[i] *= 1e5;
    t.be->upload(*tensor, v);
  }
  RecordingProbe probe(*t.be, kLimit);
  t.run(make_recipe(GetParam()), &probe);
  ASSERT_EQ(probe.figures.size(), 3u);
  const std::map<LinearGemm, Tensor> products = {
      {LinearGemm::forward, t.y}, {LinearGemm::dgrad, t.dx}, {LinearGemm::wgrad, t.dw}};
  const std::set<std::string> token_operands = {"x", "e", "et", "xt"};
  int sampled = 0;
  for (const GemmDiagnostics& d : probe.figures) {
    SCOPED_TRACE(gemm_name(d.gemm));
    const auto& [a, b] = probe.operands_of(d.gemm);
    for (const auto& [operand, figure] : {std::pair{a, d.a_error}, std::pair{b, d.b_error}}) {
      SCOPED_TRACE(operand.name);
      const QTensor& q = operand.quantized;
      const std::int64_t exact_rows = operand.transposed ? q.cols : q.rows, exact_cols = operand.transposed ? q.rows : q.cols;
      ASSERT_GT(exact_rows, kLimit);
      const bool tokens = token_operands.count(operand.name) > 0;
      sampled += tokens;
      const std::int64_t kept = tokens ? kLimit : exact_rows;
      // The exact tensor's first `kept` rows, taken into the operand's domain along its rows
      // (exact_rotation), then laid out as the operand: [kept, cols] or, transposed, [cols, kept].
      const std::vector<double> exact_raw = t.be->download(operand.exact);
      std::vector<float> exact_rows_f(exact_raw.begin(), exact_raw.begin() + kept * exact_cols);
      if (operand.exact_rotation.enabled()) rotate_rows(exact_rows_f.data(), kept, exact_cols, exact_cols, operand.exact_rotation);
      const std::int64_t rows = operand.transposed ? exact_cols : kept, cols = operand.transposed ? kept : exact_cols;
      const std::vector<float> all = dequantize(t.be->download_quantized(q));
      std::vector<float> exact(static_cast<std::size_t>(rows * cols));
      std::vector<double> corner(static_cast<std::size_t>(rows * cols));
      for (std::int64_t r = 0; r < rows; ++r) {
        for (std::int64_t c = 0; c < cols; ++c) {
          exact[static_cast<std::size_t>(r * cols + c)] =
              exact_rows_f[static_cast<std::size_t>(operand.transposed ? c * exact_cols + r : r * exact_cols + c)];
          corner[static_cast<std::size_t>(r * cols + c)] = all[static_cast<std::size_t>(r * q.cols + c)];
        }
      }
      // The GEMM's domain: the operand's rotation along its rows.
      if (operand.rotation.enabled()) rotate_rows(exact.data(), rows, cols, cols, operand.rotation);
      const std::vector<double> reference(exact.begin(), exact.end());
      const double expected = norm(minus(corner, reference)) / norm(reference);
      EXPECT_NEAR(figure, expected, 1e-5 * expected);
      if (tokens) {
        EXPECT_NE(figure, operand_relative_error(*t.be, operand, 0));  // not the whole tensor's figure
      } else {
        EXPECT_EQ(figure, operand_relative_error(*t.be, operand, 0));
      }
    }
    const Tensor& product = products.at(d.gemm);
    ASSERT_GT(product.shape().front(), kLimit);
    const bool limited = d.gemm != LinearGemm::wgrad;
    const std::size_t width = static_cast<std::size_t>(product.shape().back());
    const std::vector<double> got = t.be->download(product), exact = exact_product(t, d.gemm);
    const std::size_t kept = limited ? kLimit * width : got.size();
    const std::vector<double> got_rows(got.begin(), got.begin() + kept), exact_rows(exact.begin(), exact.begin() + kept);
    const double relative_error = norm(minus(got_rows, exact_rows)) / norm(exact_rows);
    EXPECT_NEAR(d.product.cosine, testing::dot(got_rows, exact_rows) / (norm(got_rows) * norm(exact_rows)), 1e-4);
    EXPECT_NEAR(d.product.norm_ratio, norm(got_rows) / norm(exact_rows), 2e-3);
    constexpr double kErrorTolerance = 2e-3;  // the product's BF16 output rounding moves it by far less
    EXPECT_NEAR(d.product.relative_error, relative_error, kErrorTolerance);
    if (limited) {  // the whole product's figure is another one, by more than twice the tolerance
      EXPECT_GT(std::abs(relative_error - norm(minus(got, exact)) / norm(exact)), 2 * kErrorTolerance);
    }
  }
  EXPECT_EQ(sampled, 4);  // x, e, et, xt
  // A limit that would split a scale group or a rotation block is refused.
  const ProbedOperand& x = probe.operands_of(LinearGemm::forward).first;
  for (std::int64_t bad : {-128, 100, 192}) {
    EXPECT_THROW(operand_relative_error(*t.be, x, bad), Error) << bad;
  }
}

INSTANTIATE_TEST_SUITE_P(Recipes, TokenLimit, ::testing::Values("quartet2", "quartet1", "nvidia"),
                         [](const auto& param_info) { return testing::parameter_name(param_info.param); });

// An operand whose exact tensor is already what the quantizer reproduces has no error: exactly
// 0 without a rotation, 0 up to the rotation's FP32 rounding with one.
TEST(Diagnostics, ExactlyRepresentableOperandHasZeroError) {
  std::unique_ptr<Backend> be = make_cpu_backend();
  Tensor x = be->empty({32, 64}, DType::f32);
  be->upload(x, random_values(32 * 64, 41));
  for (const Rotation& rotation : {Rotation::none(), Rotation::hadamard(32)}) {
    SCOPED_TRACE(rotation.size);
    const QTensor q = be->quantize(x, false, QuantizerSpec::defaults(QuantizerKind::rtn), rotation, {});
    const std::vector<float> values = dequantize_unrotated(be->download_quantized(q), rotation);
    Tensor exact = be->empty({32, 64}, DType::f32);
    be->upload(exact, std::vector<double>(values.begin(), values.end()));
    const double error = operand_relative_error(*be, ProbedOperand{"x", exact, false, Rotation::none(), q, rotation});
    if (rotation.enabled()) {
      EXPECT_LT(error, 1e-6);
    } else {
      EXPECT_EQ(error, 0.0);
    }
    // The quantized tensor against the original: a 4-bit error, not zero.
    EXPECT_GT(operand_relative_error(*be, ProbedOperand{"x", x, false, Rotation::none(), q, rotation}), 0.03);
  }
}

// Every quantizing recipe on one layer: each operand compared in the right domain (a wrong one,
// e.g. a rotated operand against an unrotated tensor, gives errors near sqrt(2)), products close to
// the exact ones; and the layer computes the same bits with the probe as without.
class EveryQuantizedRecipe : public ::testing::TestWithParam<std::string> {};

TEST_P(EveryQuantizedRecipe, FiguresAreSaneAndTheLayerUnchanged) {
  const Recipe recipe = make_recipe(GetParam());
  TinyLayer plain, probed;
  RecordingProbe probe(*probed.be);
  plain.run(recipe, nullptr);
  probed.run(recipe, &probe);
  EXPECT_EQ(plain.be->download(plain.y), probed.be->download(probed.y));
  EXPECT_EQ(plain.be->download(plain.dx), probed.be->download(probed.dx));
  EXPECT_EQ(plain.be->download(plain.dw), probed.be->download(probed.dw));
  ASSERT_EQ(probe.figures.size(), 3u);
  for (const GemmDiagnostics& d : probe.figures) {
    SCOPED_TRACE(gemm_name(d.gemm));
    EXPECT_EQ(probe.layers.front(), "layer");
    for (double e : {d.a_error, d.b_error}) {
      EXPECT_GT(e, 0.01);
      EXPECT_LT(e, 0.5);
    }
    EXPECT_GT(d.product.cosine, 0.9);
    EXPECT_GT(d.product.norm_ratio, 0.8);
    EXPECT_LT(d.product.norm_ratio, 1.25);
  }
}

INSTANTIATE_TEST_SUITE_P(Recipes, EveryQuantizedRecipe,
                         ::testing::Values("nvidia", "nvidia+4/6", "tetrajet2", "quartet2", "quartet1", "quartet1-sr"),
                         [](const auto& param_info) { return testing::parameter_name(param_info.param); });

// ---- the trainer ----------------------------------------------------------------------------

TrainConfig tiny_run(const std::string& recipe, const std::string& out_dir) {
  TrainConfig c;
  c.recipe = recipe;
  c.steps = 4;
  c.batch = 2;
  c.seq = 64;
  c.grad_accum = 2;
  c.lr = 3e-3;
  c.eval_every = 0;
  c.eval_batches = 1;
  c.final_eval_batches = 1;
  c.seed = 3;
  c.out_dir = out_dir;
  return c;
}

struct RunOutcome {
  TrainResult result;
  std::vector<double> weights;  // every parameter at the end
  std::vector<std::string> logs;
};

RunOutcome run_with(const TrainConfig& c, std::int64_t diagnostics_every) {
  RunOutcome r;
  TrainCallbacks cb;
  cb.log = [&](const std::string& s) { r.logs.push_back(s); };
  cb.on_finish = [&](Backend& backend, LlamaModel& model, const Tokenizer&) {
    r.weights = backend.download(model.flat().values);
  };
  RunControl control;
  control.diagnostics_every = diagnostics_every;
  r.result = train(c, cb, control);
  return r;
}

std::vector<nlohmann::json> metrics_lines(const std::filesystem::path& dir) {
  std::istringstream in(read_file(dir / "metrics.jsonl"));
  std::vector<nlohmann::json> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(nlohmann::json::parse(line));
  return lines;
}

// The run with diagnostics is bitwise the run without: losses, gradient norms, validation loss,
// final weights. Its metrics.jsonl holds one record per diagnostic step after that step's line.
TEST(Diagnostics, TrainingIsBitwiseTheSameAndRecordsAreWritten) {
  testing::TempDir with_dir, without_dir;
  const RunOutcome with = run_with(tiny_run("quartet2", with_dir.str()), 2);
  const RunOutcome without = run_with(tiny_run("quartet2", without_dir.str()), 0);
  ASSERT_EQ(with.result.history.size(), 4u);
  for (std::size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(with.result.history[i].loss, without.result.history[i].loss) << "step " << i + 1;
    EXPECT_EQ(with.result.history[i].grad_norm, without.result.history[i].grad_norm) << "step " << i + 1;
  }
  EXPECT_EQ(with.result.final_val_loss, without.result.final_val_loss);
  ASSERT_FALSE(with.weights.empty());
  EXPECT_TRUE(with.weights == without.weights);

  const std::vector<nlohmann::json> lines = metrics_lines(with_dir.path());
  std::vector<std::string> kinds;
  for (const nlohmann::json& j : lines) kinds.push_back(j.value("kind", "step") + std::to_string(j.at("step").get<int>()));
  EXPECT_EQ(kinds, (std::vector<std::string>{"step1", "step2", "diagnostics2", "step3", "step4", "diagnostics4"}));
  const std::set<std::string> expected_layers = {"layers.0.qkv_proj", "layers.0.o_proj", "layers.0.gate_up_proj",
                                                 "layers.0.down_proj", "layers.1.qkv_proj", "layers.1.o_proj",
                                                 "layers.1.gate_up_proj", "layers.1.down_proj"};
  for (const nlohmann::json& record : {lines[2], lines[5]}) {
    std::set<std::string> names;
    for (const auto& [name, layer] : record.at("layers").items()) {
      names.insert(name);
      for (const char* gemm : {"forward", "dgrad", "wgrad"}) {
        for (const char* figure : {"out_err", "cosine", "norm_ratio"}) {
          ASSERT_TRUE(layer.at(gemm).at(figure).is_number()) << name << " " << gemm << " " << figure;
        }
      }
      EXPECT_GT(layer.at("dgrad").at("cosine").get<double>(), 0.9) << name;
      EXPECT_GT(layer.at("forward").at("x_err").get<double>(), 0.0) << name;
    }
    EXPECT_EQ(names, expected_layers);
    // The mean is the average over the layers.
    double sum = 0;
    for (const auto& [name, layer] : record.at("layers").items()) sum += layer.at("wgrad").at("xt_err").get<double>();
    EXPECT_NEAR(record.at("mean").at("wgrad").at("xt_err").get<double>(), sum / 8, 1e-12);
    EXPECT_GE(record.at("seconds").get<double>(), 0.0);
    EXPECT_EQ(record.at("token_limit"), 1024);  // the default: more than this run's 128 tokens
  }
  // The step lines are the same as without diagnostics, but for the clock.
  const std::vector<nlohmann::json> plain = metrics_lines(without_dir.path());
  ASSERT_EQ(plain.size(), 4u);
  for (const auto& [a, b] : {std::pair{lines[0], plain[0]}, std::pair{lines[4], plain[3]}}) {
    EXPECT_EQ(a.at("loss"), b.at("loss"));
    EXPECT_EQ(a.at("grad_norm"), b.at("grad_norm"));
  }
}

// A BF16 recipe has no quantized GEMM: said once, and no records.
TEST(Diagnostics, Bf16RunSaysThereIsNothingToMeasure) {
  testing::TempDir dir;
  TrainConfig c = tiny_run("bf16", dir.str());
  c.steps = 2;
  const RunOutcome r = run_with(c, 1);
  int said = 0;
  for (const std::string& line : r.logs) said += line.find("--diagnostics") != std::string::npos;
  EXPECT_EQ(said, 1);
  for (const nlohmann::json& j : metrics_lines(dir.path())) EXPECT_FALSE(j.contains("kind"));
}

TEST(Diagnostics, BadValuesAreRefusedNamingTheOption) {
  testing::TempDir dir;
  const auto message = [&](const TrainConfig& c, std::int64_t every) {
    try {
      run_with(c, every);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message(tiny_run("quartet2", dir.str()), -1).find("--diagnostics must be a number of steps >= 1 (or 0: off)"),
            std::string::npos);
  EXPECT_NE(message(tiny_run("quartet2", ""), 2).find("--diagnostics needs --out"), std::string::npos);
  for (std::int64_t rows : {-128, 100}) {
    RunControl control;
    control.diagnostics_every = 2;
    control.diagnostics_tokens = rows;
    try {
      train(tiny_run("quartet2", dir.str()), TrainCallbacks{}, control);
      ADD_FAILURE() << "--diagnostics-tokens " << rows << " was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("--diagnostics-tokens must be 0 (whole tensors) or a multiple of 128, got " +
                                           std::to_string(rows)),
                std::string::npos)
          << e.what();
    }
  }
}

}  // namespace
}  // namespace quartet

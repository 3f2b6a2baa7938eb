#include "quartet/nn/linear.h"

#include <gtest/gtest.h>

#include <cmath>

#include "quartet/error.h"
#include "support/gradcheck.h"

namespace quartet {
namespace {

using testing::random_values;

TEST(Recipe, EveryNamedRecipeIsValid) {
  for (const std::string& name : recipe_names()) {
    const Recipe r = make_recipe(name);
    EXPECT_EQ(r.name, name);
    EXPECT_NO_THROW(r.validate());
    EXPECT_FALSE(r.describe().empty());
  }
  const Recipe q2 = make_recipe("quartet2");
  EXPECT_EQ(q2.fwd_x.quantizer->kind, QuantizerKind::four_over_six);
  EXPECT_EQ(q2.dgrad_e.quantizer->kind, QuantizerKind::ms_eden_g16);
  EXPECT_EQ(q2.wgrad_xt.source, OperandSource::requantized);
  EXPECT_EQ(q2.dgrad_e.rotation, 128);
  EXPECT_FALSE(q2.saves_high_precision_x());
  const Recipe nv = make_recipe("nvidia");
  EXPECT_EQ(nv.fwd_w.quantizer->kind, QuantizerKind::square16);
  EXPECT_EQ(nv.dgrad_wt.source, OperandSource::forward_transposed);
  EXPECT_EQ(nv.wgrad_et.rotation, 16);
  EXPECT_EQ(nv.backward_signs, SignPolicy::fixed_per_run);
  EXPECT_TRUE(nv.saves_high_precision_x());
  EXPECT_TRUE(make_recipe("quartet1").backward_through_trust_mask);
}

TEST(Recipe, AblationSwitches) {
  RecipeOptions o;
  o.eden_group = 128;
  o.backward_rotation = 32;
  o.four_over_six = false;
  const Recipe r = make_recipe("quartet2", o);
  EXPECT_EQ(r.dgrad_wt.quantizer->kind, QuantizerKind::ms_eden_g128);
  EXPECT_EQ(r.wgrad_et.rotation, 32);
  EXPECT_EQ(r.fwd_w.quantizer->kind, QuantizerKind::rtn);
  EXPECT_NE(r.name.find("modified"), std::string::npos);
  RecipeOptions fwd_only;
  fwd_only.quantize_backward = false;
  const Recipe f = make_recipe("tetrajet2", fwd_only);
  EXPECT_TRUE(f.quantizes_forward());
  EXPECT_FALSE(f.quantizes_backward());
  RecipeOptions bwd_only;
  bwd_only.quantize_forward = false;
  const Recipe b = make_recipe("quartet2", bwd_only);
  EXPECT_FALSE(b.quantizes_forward());
  EXPECT_EQ(b.dgrad_wt.source, OperandSource::high_precision);
  RecipeOptions headroom;
  headroom.backward_headroom = 1.25;
  EXPECT_EQ(make_recipe("tetrajet2", headroom).dgrad_e.quantizer->headroom, 1.25);
}

TEST(Recipe, ImpossibleCombinationsAreRejected) {
  EXPECT_THROW(make_recipe("quartet3"), Error);
  try {
    make_recipe("fp4");
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("quartet2"), std::string::npos) << e.what();
  }
  RecipeOptions o;
  o.four_over_six = true;
  EXPECT_THROW(make_recipe("quartet1", o), Error);  // no NVFP4 RTN forward
  o = {};
  o.eden_group = 128;
  EXPECT_THROW(make_recipe("tetrajet2", o), Error);  // no MS-EDEN
  o = {};
  o.backward_rotation = 64;
  EXPECT_THROW(make_recipe("quartet2", o), Error);
  o = {};
  o.backward_rotation = 32;
  EXPECT_THROW(make_recipe("bf16", o), Error);
  o = {};
  o.backward_quantizer = QuantizerKind::mxfp4_rtn;  // MXFP4 E with an NVFP4 square W^T
  EXPECT_THROW(make_recipe("nvidia", o), Error);
}

class LinearTest : public ::testing::Test {
 protected:
  std::unique_ptr<Backend> be = make_cpu_backend();
  static constexpr std::int64_t M = 128, K = 128, N = 128;

  Tensor make(const Shape& shape, DType dtype, std::uint64_t seed, double scale = 1.0) {
    Tensor t = be->empty(shape, dtype);
    be->upload(t, random_values(static_cast<std::size_t>(shape_numel(shape)), seed, scale));
    return t;
  }
};

// Mean over `draws` backward calls of dX and dW, relative to the high-precision backward of
// the quantized forward (E W^ and E^T X^ with the dequantized forward operands).
struct BackwardBias {
  double single_error = 0;  // mean over draws of ||g_d - g||^2 / ||g||^2
  double mean_error = 0;    // ||mean_d g_d - g||^2 / ||g||^2
  double mean_error_se = 0; // its standard error from the spread over rows
};

TEST_F(LinearTest, Bf16RecipeIsTheExactLinearLayer) {
  auto ref = make_cpu_reference_backend();
  const Recipe r = make_recipe("bf16");
  Tensor x = ref->empty({4, 8}, DType::f64), w = ref->empty({3, 8}, DType::f64), dy = ref->empty({4, 3}, DType::f64);
  const auto xv = random_values(32, 1), wv = random_values(24, 2), dyv = random_values(12, 3);
  ref->upload(x, xv);
  ref->upload(w, wv);
  ref->upload(dy, dyv);
  Tensor y = ref->empty({4, 3}, DType::f64), dx = ref->empty({4, 8}, DType::f64), dw = ref->zeros({3, 8}, DType::f64);
  LinearSaved saved;
  linear_forward(*ref, r, x, w, y, saved, {});
  linear_backward(*ref, r, dy, w, saved, dx, dw, {});
  linear_backward(*ref, r, dy, w, saved, dx, dw, {});  // dW accumulates
  const auto yv = ref->download(y), dxv = ref->download(dx), dwv = ref->download(dw);
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 3; ++j) {
      double e = 0;
      for (int k = 0; k < 8; ++k) e += xv[i * 8 + k] * wv[j * 8 + k];
      EXPECT_NEAR(yv[i * 3 + j], e, 1e-12);
    }
  for (int i = 0; i < 4; ++i)
    for (int k = 0; k < 8; ++k) {
      double e = 0;
      for (int j = 0; j < 3; ++j) e += dyv[i * 3 + j] * wv[j * 8 + k];
      EXPECT_NEAR(dxv[i * 8 + k], e, 1e-12);
    }
  for (int j = 0; j < 3; ++j)
    for (int k = 0; k < 8; ++k) {
      double e = 0;
      for (int i = 0; i < 4; ++i) e += dyv[i * 3 + j] * xv[i * 8 + k];
      EXPECT_NEAR(dwv[j * 8 + k], 2 * e, 1e-12);
    }
}

TEST_F(LinearTest, QuantizedForwardIsTheProductOfTheQuantizedOperands) {
  for (const std::string& name : recipe_names()) {
    if (name == "bf16") continue;
    const Recipe r = make_recipe(name);
    Tensor x = make({M, K}, DType::bf16, 4), w = make({N, K}, DType::f32, 5, 0.1), y = be->empty({M, N}, DType::bf16);
    LinearSaved saved;
    linear_forward(*be, r, x, w, y, saved, {1, 2, 3});
    // Re-quantize the same way and multiply the dequantized operands in double.
    const Rotation rot = r.fwd_x.rotation ? Rotation::hadamard(r.fwd_x.rotation) : Rotation::none();
    const QuantizedTensor xq = be->download_quantized(be->quantize(x, false, *r.fwd_x.quantizer, rot, {1, 2 * kStreamsPerLinear + 0, 3}));
    const QuantizedTensor wq = be->download_quantized(be->quantize(w, false, *r.fwd_w.quantizer, rot, {1, 2 * kStreamsPerLinear + 1, 3}));
    const auto yv = be->download(y);
    const std::vector<float> xd = dequantize(xq), wd = dequantize(wq);
    int off = 0;
    for (std::int64_t i = 0; i < M; ++i)
      for (std::int64_t j = 0; j < N; ++j) {
        double e = 0;
        for (std::int64_t k = 0; k < K; ++k) e += static_cast<double>(xd[i * K + k]) * wd[j * K + k];
        off += std::fabs(yv[i * N + j] - e) > std::fabs(e) * 0x1p-8 + 1e-5;  // BF16 output rounding
      }
    EXPECT_EQ(off, 0) << name;
  }
}

TEST_F(LinearTest, Quartet2KeepsOnlyFourBitActivations) {
  Tensor x = make({M, K}, DType::bf16, 6), w = make({N, K}, DType::f32, 7, 0.1), y = be->empty({M, N}, DType::bf16);
  LinearSaved q2, b16;
  linear_forward(*be, make_recipe("quartet2"), x, w, y, q2, {});
  linear_forward(*be, make_recipe("bf16"), x, w, y, b16, {});
  EXPECT_FALSE(q2.x.defined());
  EXPECT_TRUE(q2.xq.defined());
  EXPECT_EQ(b16.activation_bytes(), static_cast<std::size_t>(M * K * 2));
  // NVFP4 X: 4 bits + one E4M3 scale per 16 = 4.5 bits per element; W likewise (per step).
  const std::size_t x_bytes = M * K / 2 + M * K / 16 + 4;
  EXPECT_EQ(q2.xq.bytes, x_bytes);
  EXPECT_LE(static_cast<double>(q2.xq.bytes) / b16.activation_bytes(), 0.3);
}

// The quartet2 backward is an unbiased estimate of the high-precision backward of the
// quantized forward: averaging B calls with fresh randomness, B * error(mean) stays at the
// single-call error (ratio 1). With RTN in place of MS-EDEN the ratio grows with B: the test
// must see that bias, so it is known to be able to fail.
double backward_bias_ratio(Backend& be, const Recipe& recipe, int draws, double* ratio_se) {
  const std::int64_t M = 128, K = 128, N = 128;
  Tensor x = be.empty({M, K}, DType::bf16), w = be.empty({N, K}, DType::f32), dy = be.empty({M, N}, DType::bf16);
  be.upload(x, random_values(M * K, 21));
  be.upload(w, random_values(N * K, 22, 0.1));
  be.upload(dy, random_values(M * N, 23));
  Tensor y = be.empty({M, N}, DType::bf16);
  LinearSaved saved;
  linear_forward(be, recipe, x, w, y, saved, {9, 0, 0});
  // The reference: E W^ with W^ the dequantized forward weight (dgrad only; dW is symmetric).
  const QuantizedTensor wq = be.download_quantized(be.quantize(w, false, *recipe.fwd_w.quantizer, Rotation::none(), {9, 1, 0}));
  const std::vector<float> wd = dequantize(wq);
  const auto e = be.download(dy);
  std::vector<double> ref(M * K, 0.0);
  for (std::int64_t i = 0; i < M; ++i)
    for (std::int64_t j = 0; j < N; ++j)
      for (std::int64_t k = 0; k < K; ++k) ref[i * K + k] += e[i * N + j] * wd[j * K + k];
  std::vector<double> sum(M * K, 0.0), single(M, 0.0);
  Tensor dx = be.empty({M, K}, DType::bf16), dw = be.zeros({N, K}, DType::f32);
  for (int d = 0; d < draws; ++d) {
    linear_backward(be, recipe, dy, w, saved, dx, dw, {9, 0, static_cast<std::uint32_t>(d + 1)});
    const auto g = be.download(dx);
    for (std::int64_t i = 0; i < M; ++i)
      for (std::int64_t k = 0; k < K; ++k) {
        sum[i * K + k] += g[i * K + k];
        single[i] += (g[i * K + k] - ref[i * K + k]) * (g[i * K + k] - ref[i * K + k]);
      }
  }
  // Per-row ratio B * ||mean - ref||^2 / mean single-call squared error; rows are nearly
  // independent replicates (independent rounding decisions), so their spread gives the SE.
  std::vector<double> ratio(M);
  double mean = 0;
  for (std::int64_t i = 0; i < M; ++i) {
    double err = 0;
    for (std::int64_t k = 0; k < K; ++k) {
      const double m = sum[i * K + k] / draws - ref[i * K + k];
      err += m * m;
    }
    ratio[i] = draws * err / (single[i] / draws);
    mean += ratio[i] / M;
  }
  double var = 0;
  for (double r : ratio) var += (r - mean) * (r - mean);
  *ratio_se = std::sqrt(var / (M - 1) / M);
  return mean;
}

TEST_F(LinearTest, Quartet2BackwardIsUnbiased) {
  double se = 0;
  const double ratio = backward_bias_ratio(*be, make_recipe("quartet2"), 256, &se);
  EXPECT_NEAR(ratio, 1.0, 5 * se + 0.02) << "B err(B) / err(1); the 0.02 covers BF16 rounding of dX";
  RecordProperty("ratio", std::to_string(ratio) + " se " + std::to_string(se));
  EXPECT_LT(se, 0.1);
}

TEST_F(LinearTest, TheTestDetectsARoundToNearestBackward) {
  RecipeOptions o;
  o.backward_quantizer = QuantizerKind::rtn;
  double se = 0;
  const double ratio = backward_bias_ratio(*be, make_recipe("quartet2", o), 256, &se);
  EXPECT_GT(ratio, 1.0 + 5 * se + 0.02);
  RecordProperty("ratio", std::to_string(ratio) + " se " + std::to_string(se));
}

TEST_F(LinearTest, ForwardOnlyQuantizationHasTheBf16Backward) {
  RecipeOptions o;
  o.quantize_backward = false;
  const Recipe fwd_only = make_recipe("quartet2", o), bf16 = make_recipe("bf16");
  Tensor x = make({M, K}, DType::bf16, 31), w = make({N, K}, DType::f32, 32, 0.1), dy = make({M, N}, DType::bf16, 33);
  Tensor y = be->empty({M, N}, DType::bf16);
  Tensor dx1 = be->empty({M, K}, DType::bf16), dx2 = be->empty({M, K}, DType::bf16);
  Tensor dw1 = be->zeros({N, K}, DType::f32), dw2 = be->zeros({N, K}, DType::f32);
  LinearSaved s1, s2;
  linear_forward(*be, fwd_only, x, w, y, s1, {});
  linear_forward(*be, bf16, x, w, y, s2, {});
  linear_backward(*be, fwd_only, dy, w, s1, dx1, dw1, {});
  linear_backward(*be, bf16, dy, w, s2, dx2, dw2, {});
  EXPECT_EQ(be->download(dx1), be->download(dx2));
  EXPECT_EQ(be->download(dw1), be->download(dw2));
}

TEST_F(LinearTest, EveryRecipeRunsBackwardWithFiniteGradients) {
  for (const std::string& name : recipe_names()) {
    const Recipe r = make_recipe(name);
    Tensor x = make({M, K}, DType::bf16, 41), w = make({N, K}, DType::f32, 42, 0.1), dy = make({M, N}, DType::bf16, 43);
    Tensor y = be->empty({M, N}, DType::bf16), dx = be->empty({M, K}, DType::bf16), dw = be->zeros({N, K}, DType::f32);
    LinearSaved s;
    linear_forward(*be, r, x, w, y, s, {1, 0, 1});
    linear_backward(*be, r, dy, w, s, dx, dw, {1, 0, 1});
    EXPECT_TRUE(be->all_finite(dx)) << name;
    EXPECT_TRUE(be->all_finite(dw)) << name;
    EXPECT_GT(be->sum_of_squares(dw), 0.0) << name;
  }
}

// What a caller that keeps only x and w recomputes for the backward is what the forward saved:
// the backward from it gives the same bits, for every recipe (with the forward's random call).
TEST_F(LinearTest, SavedForBackwardIsWhatTheForwardSaved) {
  for (const std::string& name : recipe_names()) {
    const Recipe r = make_recipe(name);
    Tensor x = make({M, K}, DType::bf16, 51), w = make({N, K}, DType::f32, 52, 0.1), dy = make({M, N}, DType::bf16, 53);
    Tensor y = be->empty({M, N}, DType::bf16);
    const LinearRandom random{9, 2, 5};
    LinearSaved forward_saved;
    linear_forward(*be, r, x, w, y, forward_saved, random);
    const LinearSaved recomputed = linear_saved_for_backward(*be, r, x, w, random);
    EXPECT_EQ(recomputed.tokens, forward_saved.tokens) << name;
    EXPECT_EQ(recomputed.x.defined(), forward_saved.x.defined()) << name;
    EXPECT_EQ(recomputed.xq.defined(), forward_saved.xq.defined()) << name;
    EXPECT_EQ(recomputed.wq.defined(), forward_saved.wq.defined()) << name;
    const auto backward = [&](const LinearSaved& saved) {
      Tensor dx = be->empty({M, K}, DType::bf16), dw = be->zeros({N, K}, DType::f32);
      linear_backward(*be, r, dy, w, saved, dx, dw, random);
      return std::make_pair(be->download(dx), be->download(dw));
    };
    const auto [dx_forward, dw_forward] = backward(forward_saved);
    const auto [dx_recomputed, dw_recomputed] = backward(recomputed);
    EXPECT_EQ(dx_recomputed, dx_forward) << name;
    EXPECT_EQ(dw_recomputed, dw_forward) << name;
  }
  Tensor x = make({M, K}, DType::bf16, 1), w = make({N, K + 16}, DType::f32, 2);
  EXPECT_THROW(linear_saved_for_backward(*be, make_recipe("quartet2"), x, w, {}), Error);
}

TEST_F(LinearTest, RejectsMismatchedShapes) {
  Tensor x = make({M, K}, DType::bf16, 1), w = make({N, K + 16}, DType::f32, 2), y = be->empty({M, N}, DType::bf16);
  LinearSaved s;
  EXPECT_THROW(linear_forward(*be, make_recipe("bf16"), x, w, y, s, {}), Error);
  // RHT-128 along a reduction dimension of 64 tokens is impossible.
  Tensor x64 = make({64, K}, DType::bf16, 3), w2 = make({N, K}, DType::f32, 4), y64 = be->empty({64, N}, DType::bf16);
  linear_forward(*be, make_recipe("quartet2"), x64, w2, y64, s, {});
  Tensor dy = make({64, N}, DType::bf16, 5), dx = be->empty({64, K}, DType::bf16), dw = be->zeros({N, K}, DType::f32);
  EXPECT_THROW(linear_backward(*be, make_recipe("quartet2"), dy, w2, s, dx, dw, {}), Error);
}

}  // namespace
}  // namespace quartet

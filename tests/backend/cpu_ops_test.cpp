// Every CPU operation's backward pass against finite differences of its forward pass, on the
// double-precision reference backend (loss = <R, f(x)> with a random R).
#include <gtest/gtest.h>

#include <cmath>

#include "quartet/backend/backend.h"
#include "quartet/error.h"
#include "quartet/numerics/bf16.h"
#include "support/gradcheck.h"

namespace quartet {
namespace {

using testing::dot;
using testing::expect_gradients_match;
using testing::numeric_gradient;
using testing::random_values;

class CpuOps : public ::testing::Test {
 protected:
  std::unique_ptr<Backend> be = make_cpu_reference_backend();

  Tensor tensor(const Shape& shape, const std::vector<double>& values) {
    Tensor t = be->empty(shape, DType::f64);
    be->upload(t, values);
    return t;
  }
  Tensor tokens(const std::vector<std::int32_t>& ids) {
    Tensor t = be->empty({static_cast<std::int64_t>(ids.size())}, DType::i32);
    be->upload_tokens(t, ids);
    return t;
  }
};

TEST_F(CpuOps, Embedding) {
  const std::int64_t v = 7, c = 3;
  const std::vector<std::int32_t> ids = {1, 4, 1, 6};
  const auto table0 = random_values(v * c, 1);
  const auto r = random_values(ids.size() * c, 2);
  const auto f = [&](const std::vector<double>& table) {
    Tensor out = be->empty({4, c}, DType::f64), t = tensor({v, c}, table), tok = tokens(ids);
    be->embedding_forward(out, tok, t);
    return dot(be->download(out), r);
  };
  Tensor dtable = be->zeros({v, c}, DType::f64), tok = tokens(ids), dout = tensor({4, c}, r);
  be->embedding_backward(dtable, tok, dout);
  expect_gradients_match(be->download(dtable), numeric_gradient(f, table0), "dtable");
  Tensor bad = tokens({1, 7, 0, 0});
  Tensor out = be->empty({4, c}, DType::f64), t = tensor({v, c}, table0);
  EXPECT_THROW(be->embedding_forward(out, bad, t), Error);
}

TEST_F(CpuOps, RmsNorm) {
  const std::int64_t n = 3, c = 8;
  const auto x0 = random_values(n * c, 3), w0 = random_values(c, 4), r = random_values(n * c, 5);
  const auto run = [&](const std::vector<double>& x, const std::vector<double>& w) {
    Tensor out = be->empty({n, c}, DType::f64), rstd = be->empty({n}, DType::f64), xt = tensor({n, c}, x), wt = tensor({c}, w);
    be->rmsnorm_forward(out, rstd, xt, wt, 1e-5);
    return dot(be->download(out), r);
  };
  Tensor out = be->empty({n, c}, DType::f64), rstd = be->empty({n}, DType::f64), xt = tensor({n, c}, x0), wt = tensor({c}, w0);
  be->rmsnorm_forward(out, rstd, xt, wt, 1e-5);
  // The forward itself: x / rms(x) * w.
  const auto y = be->download(out);
  double ms = 0;
  for (int j = 0; j < c; ++j) ms += x0[j] * x0[j] / c;
  EXPECT_NEAR(y[1], x0[1] / std::sqrt(ms + 1e-5) * w0[1], 1e-12);
  Tensor dx = be->empty({n, c}, DType::f64), dw = be->zeros({c}, DType::f64), dout = tensor({n, c}, r);
  be->rmsnorm_backward(dx, dw, dout, xt, wt, rstd, false);
  const auto dx_expected = numeric_gradient([&](const auto& x) { return run(x, w0); }, x0);
  expect_gradients_match(be->download(dx), dx_expected, "dx");
  expect_gradients_match(be->download(dw), numeric_gradient([&](const auto& w) { return run(x0, w); }, w0), "dweight");
  // Accumulating into the residual stream's gradient adds the same values to what dx held.
  const auto held = random_values(n * c, 14);
  Tensor acc = tensor({n, c}, held), dw2 = be->zeros({c}, DType::f64);
  be->rmsnorm_backward(acc, dw2, dout, xt, wt, rstd, true);
  const auto got = be->download(acc), alone = be->download(dx);
  for (std::size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], held[i] + alone[i], 1e-12) << i;
}

TEST_F(CpuOps, ResidualRmsNormIsTheAddThenTheNorm) {
  const std::int64_t n = 3, c = 8;
  const auto x = random_values(n * c, 15), y = random_values(n * c, 16), w = random_values(c, 17);
  Tensor xt = tensor({n, c}, x), yt = tensor({n, c}, y), wt = tensor({c}, w);
  Tensor sum = be->empty({n, c}, DType::f64), out = be->empty({n, c}, DType::f64), rstd = be->empty({n}, DType::f64);
  be->residual_rmsnorm_forward(sum, out, rstd, xt, yt, wt, 1e-5);
  std::vector<double> expected_sum(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) expected_sum[i] = x[i] + y[i];
  EXPECT_EQ(be->download(sum), expected_sum);
  Tensor st = tensor({n, c}, expected_sum), out2 = be->empty({n, c}, DType::f64), rstd2 = be->empty({n}, DType::f64);
  be->rmsnorm_forward(out2, rstd2, st, wt, 1e-5);
  EXPECT_EQ(be->download(out), be->download(out2));
  EXPECT_EQ(be->download(rstd), be->download(rstd2));
}

TEST_F(CpuOps, SwiGlu) {
  const std::int64_t n = 4, f = 5;
  const auto gu0 = random_values(n * 2 * f, 6, 2.0), r = random_values(n * f, 7);
  const auto run = [&](const std::vector<double>& gu) {
    Tensor out = be->empty({n, f}, DType::f64), in = tensor({n, 2 * f}, gu);
    be->swiglu_forward(out, in);
    return dot(be->download(out), r);
  };
  Tensor out = be->empty({n, f}, DType::f64), in = tensor({n, 2 * f}, gu0);
  be->swiglu_forward(out, in);
  const double g = gu0[0], u = gu0[f];
  EXPECT_NEAR(be->download(out)[0], g / (1 + std::exp(-g)) * u, 1e-12);
  Tensor dgu = be->empty({n, 2 * f}, DType::f64), dout = tensor({n, f}, r);
  be->swiglu_backward(dgu, dout, in);
  expect_gradients_match(be->download(dgu), numeric_gradient(run, gu0), "dgate_up");
}

class AttentionShapes : public CpuOps, public ::testing::WithParamInterface<std::pair<int, int>> {};

TEST_P(AttentionShapes, AttentionWithRopeAndGroupedHeads) {
  AttentionShape s;
  s.batch = 2;
  s.seq = 5;
  s.heads = GetParam().first;
  s.kv_heads = GetParam().second;
  s.head_dim = 4;
  const auto qkv0 = random_values(s.tokens() * s.qkv_width(), 8), r = random_values(s.tokens() * s.q_width(), 9);
  const auto run = [&](const std::vector<double>& qkv) {
    Tensor out = be->empty({s.tokens(), s.q_width()}, DType::f64), in = tensor({s.tokens(), s.qkv_width()}, qkv);
    AttentionSaved saved;
    be->attention_forward(out, saved, in, s);
    return dot(be->download(out), r);
  };
  Tensor out = be->empty({s.tokens(), s.q_width()}, DType::f64), in = tensor({s.tokens(), s.qkv_width()}, qkv0);
  AttentionSaved saved;
  be->attention_forward(out, saved, in, s);
  // Causality and position 0: the first token attends only to itself, so its output is its v.
  const auto y = be->download(out);
  for (int i = 0; i < s.head_dim; ++i) {
    EXPECT_NEAR(y[i], qkv0[(s.heads + s.kv_heads) * s.head_dim + i], 1e-12) << "head 0 of token 0 = v of kv head 0";
  }
  Tensor dqkv = be->empty({s.tokens(), s.qkv_width()}, DType::f64), dout = tensor({s.tokens(), s.q_width()}, r);
  be->attention_backward(dqkv, dout, in, saved, s);
  expect_gradients_match(be->download(dqkv), numeric_gradient(run, qkv0), "dqkv");
}

INSTANTIATE_TEST_SUITE_P(Heads, AttentionShapes, ::testing::Values(std::pair{2, 2}, std::pair{4, 2}, std::pair{4, 1}));

TEST_F(CpuOps, AttentionRejectsBadShapes) {
  AttentionShape s{1, 4, 3, 2, 4};  // heads not a multiple of kv heads
  Tensor out = be->empty({4, 12}, DType::f64), in = be->zeros({4, 28}, DType::f64);
  AttentionSaved saved;
  EXPECT_THROW(be->attention_forward(out, saved, in, s), Error);
}

TEST_F(CpuOps, CrossEntropy) {
  const std::int64_t n = 4, v = 6;
  const std::vector<std::int32_t> targets = {2, -1, 5, 0};  // one masked row
  const auto logits0 = random_values(n * v, 10, 3.0);
  const double scale = 1.0 / 3.0;
  const auto run = [&](const std::vector<double>& l) {
    Tensor d = be->empty({n, v}, DType::f64), lt = tensor({n, v}, l), tt = tokens(targets);
    return be->cross_entropy_loss(d, lt, tt, scale) * scale;
  };
  Tensor d = be->empty({n, v}, DType::f64), lt = tensor({n, v}, logits0), tt = tokens(targets);
  const double loss = be->cross_entropy_loss(d, lt, tt, scale);
  double expected = 0;
  for (int i : {0, 2, 3}) {
    double z = 0;
    for (int j = 0; j < v; ++j) z += std::exp(logits0[i * v + j]);
    expected += std::log(z) - logits0[i * v + targets[i]];
  }
  EXPECT_NEAR(loss, expected, 1e-12);
  expect_gradients_match(be->download(d), numeric_gradient(run, logits0), "dlogits");
  Tensor bad = tokens({2, 6, 0, 0});
  EXPECT_THROW(be->cross_entropy_loss(d, lt, bad, 1.0), Error);
  // The loss is added to what the sum held (micro-batches accumulate into one step's sum).
  Tensor sum = tensor({1}, {10.0});
  be->cross_entropy(d, lt, tt, v, scale, sum);
  EXPECT_NEAR(be->download(sum)[0], 10.0 + expected, 1e-12);
}

TEST_F(CpuOps, CrossEntropyIgnoresPaddingColumns) {
  // The vocabulary padded from 6 to 8 columns (the model pads for aligned GEMMs): the padding
  // takes no part in the softmax, whatever it holds, and gets a zero gradient.
  const std::int64_t n = 3, v = 6, width = 8;
  const std::vector<std::int32_t> targets = {2, 5, 0};
  const auto logits = random_values(n * v, 18, 3.0);
  std::vector<double> padded(static_cast<std::size_t>(n * width), 7.0);
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < v; ++j) padded[static_cast<std::size_t>(i * width + j)] = logits[static_cast<std::size_t>(i * v + j)];
  Tensor d = be->empty({n, v}, DType::f64), lt = tensor({n, v}, logits), tt = tokens(targets);
  const double expected = be->cross_entropy_loss(d, lt, tt, 0.5);
  Tensor pd = tensor({n, width}, padded), sum = be->zeros({1}, DType::f64);
  be->cross_entropy(pd, pd, tt, v, 0.5, sum);
  EXPECT_NEAR(be->download(sum)[0], expected, 1e-12);
  const auto g = be->download(d), pg = be->download(pd);
  for (std::int64_t i = 0; i < n; ++i) {
    for (std::int64_t j = 0; j < width; ++j) {
      const double want = j < v ? g[static_cast<std::size_t>(i * v + j)] : 0.0;
      EXPECT_NEAR(pg[static_cast<std::size_t>(i * width + j)], want, 1e-15) << i << " " << j;
    }
  }
  Tensor bad = tokens({6, 0, 0});  // a padding column is not a class
  EXPECT_THROW(be->cross_entropy(pd, pd, bad, v, 0.5, sum), Error);
  EXPECT_THROW(be->cross_entropy(pd, pd, tt, width + 1, 0.5, sum), Error);
}

TEST_F(CpuOps, GemmEveryTranspositionAndAccumulation) {
  const std::int64_t m = 3, n = 4, k = 5;
  const auto a = random_values(m * k, 11), b = random_values(n * k, 12), c0 = random_values(m * n, 13);
  for (bool at : {false, true}) {
    for (bool bt : {false, true}) {
      for (bool acc : {false, true}) {
        std::vector<double> a_store(a.size()), b_store(b.size());
        for (int i = 0; i < m; ++i)
          for (int j = 0; j < k; ++j) a_store[at ? j * m + i : i * k + j] = a[i * k + j];
        for (int i = 0; i < n; ++i)
          for (int j = 0; j < k; ++j) b_store[bt ? j * n + i : i * k + j] = b[i * k + j];
        Tensor ta = tensor(at ? Shape{k, m} : Shape{m, k}, a_store), tb = tensor(bt ? Shape{k, n} : Shape{n, k}, b_store);
        Tensor out = tensor({m, n}, c0);
        be->gemm(out, ta, at, tb, bt, acc);
        const auto got = be->download(out);
        for (int i = 0; i < m; ++i)
          for (int j = 0; j < n; ++j) {
            double e = acc ? c0[i * n + j] : 0.0;
            for (int l = 0; l < k; ++l) e += a[i * k + l] * b[j * k + l];
            EXPECT_NEAR(got[i * n + j], e, 1e-12) << at << bt << acc;
          }
      }
    }
  }
  Tensor wrong = be->empty({m, n + 1}, DType::f64), ta = tensor({m, k}, a), tb = tensor({n, k}, b);
  EXPECT_THROW(be->gemm(wrong, ta, false, tb, false, false), Error);
}

TEST_F(CpuOps, AdamWStepMatchesTheFormula) {
  // Two segments (a decayed matrix and an undecayed norm) with a gap between them.
  Tensor p = tensor({5}, {1.0, -2.0, 0.0, 3.0, 0.5}), g = tensor({5}, {0.5, 0.25, 0.0, -0.125, 0.0625});
  Tensor m = be->zeros({5}, DType::f64), v = be->zeros({5}, DType::f64), p16 = be->zeros({5}, DType::bf16);
  Tensor status = tensor({kStepSlots}, {1.5, 0.0, 0.0, 0.0, 0.0});
  const std::vector<ParameterSegment> segments = {{0, 2, true}, {3, 2, false}};
  AdamWStep hp;
  hp.lr = 0.1;
  hp.weight_decay = 0.01;
  hp.step = 1;
  hp.max_grad_norm = 10.0;  // no clipping
  be->adamw_step(p, p16, g, m, v, segments, hp, status);
  // Step 1: m_hat = g, v_hat = g^2, so the update is lr (g/(|g| + eps) + wd p).
  const auto got = be->download(p);
  EXPECT_NEAR(got[0], 1.0 - 0.1 * (0.5 / (0.5 + 1e-8) + 0.01 * 1.0), 1e-12);
  EXPECT_NEAR(got[1], -2.0 - 0.1 * (0.25 / (0.25 + 1e-8) + 0.01 * -2.0), 1e-12);
  EXPECT_EQ(got[2], 0.0) << "outside every segment: untouched";
  EXPECT_NEAR(got[3], 3.0 - 0.1 * (-0.125 / (0.125 + 1e-8)), 1e-12) << "no decay on this segment";
  EXPECT_NEAR(be->download(m)[0], 0.05, 1e-15);
  EXPECT_NEAR(be->download(v)[1], 0.05 * 0.0625, 1e-15);
  const auto st = be->download(status);
  const double norm = std::sqrt(0.25 + 0.0625 + 0.015625 + 0.00390625);
  EXPECT_NEAR(st[kStepGradNorm], norm, 1e-15);
  EXPECT_EQ(st[kStepApplied], 1.0);
  EXPECT_EQ(st[kStepLoss], 1.5) << "read, not written";
  const auto w16 = be->download(p16);
  for (int i : {0, 1, 3, 4}) {
    EXPECT_EQ(w16[i], round_to_bf16(static_cast<float>(got[i]))) << "the BF16 copy of updated weight " << i;
  }

  EXPECT_DOUBLE_EQ(be->sum_of_squares(g), 0.25 + 0.0625 + 0.015625 + 0.00390625);
  EXPECT_TRUE(be->all_finite(g));
  Tensor bad = tensor({2}, {1.0, NAN});
  EXPECT_FALSE(be->all_finite(bad));
}

TEST_F(CpuOps, AdamWStepClipsToTheGlobalNorm) {
  // Clipping scales every gradient by max_norm / norm: with Adam's first step the update of a
  // coordinate is sign-like, so compare the moments instead.
  Tensor p = tensor({2}, {0.0, 0.0}), g = tensor({2}, {3.0, 4.0}), m = be->zeros({2}, DType::f64), v = be->zeros({2}, DType::f64);
  Tensor status = tensor({kStepSlots}, {0.0, 0.0, 0.0, 0.0, 0.0}), none;
  AdamWStep hp;
  hp.lr = 0.1;
  hp.max_grad_norm = 1.0;
  be->adamw_step(p, none, g, m, v, {{0, 2, true}}, hp, status);
  EXPECT_NEAR(be->download(status)[kStepGradNorm], 5.0, 1e-15);
  EXPECT_NEAR(be->download(m)[0], 0.1 * 3.0 / 5.0, 1e-15);
  EXPECT_NEAR(be->download(m)[1], 0.1 * 4.0 / 5.0, 1e-15);
}

TEST_F(CpuOps, AdamWStepSkipsANonFiniteLossOrGradient) {
  for (const bool bad_loss : {true, false}) {
    Tensor p = tensor({2}, {1.0, 2.0}), g = tensor({2}, {0.5, bad_loss ? 0.5 : INFINITY});
    Tensor m = be->zeros({2}, DType::f64), v = be->zeros({2}, DType::f64), none;
    Tensor status = tensor({kStepSlots}, {bad_loss ? NAN : 1.0, 0.0, 0.0, 0.0, 0.0});
    be->adamw_step(p, none, g, m, v, {{0, 2, true}}, AdamWStep{.lr = 0.1}, status);
    EXPECT_EQ(be->download(status)[kStepApplied], 0.0) << bad_loss;
    EXPECT_EQ(be->download(p), (std::vector<double>{1.0, 2.0})) << "parameters unchanged";
    EXPECT_EQ(be->download(m), (std::vector<double>{0.0, 0.0})) << "moments unchanged";
  }
}

TEST_F(CpuOps, AdamWStepRejectsSegmentsOutsideTheBuffers) {
  Tensor p = tensor({2}, {1.0, 2.0}), g = tensor({2}, {0.5, 0.5}), m = be->zeros({2}, DType::f64), v = be->zeros({2}, DType::f64);
  Tensor status = tensor({kStepSlots}, {0.0, 0.0, 0.0, 0.0, 0.0}), none;
  EXPECT_THROW(be->adamw_step(p, none, g, m, v, {{1, 2, true}}, AdamWStep{}, status), Error);
  EXPECT_THROW(be->adamw_step(p, none, g, m, v, {{0, 2, true}, {1, 1, false}}, AdamWStep{}, status), Error)
      << "overlapping segments";
}

// quantize_both_ways, as every backend without a kernel for the pair has it, is quantize(x, false,
// the row-wise arguments) and then quantize(x, true, the transposed ones): each side with its own
// quantizer, rotation and random stream (distinct here, so that a side given the other's shows),
// and a non-finite input reported as the row-wise call, the first, reports it.
TEST(CpuBackend, QuantizeBothWaysIsTheTwoQuantizeCalls) {
  auto be = make_cpu_backend();
  const std::int64_t rows = 256, cols = 128;
  std::vector<double> values = random_values(static_cast<std::size_t>(rows * cols), 16);
  Tensor x = be->empty({rows, cols}, DType::bf16);
  be->upload(x, values);
  const auto same = [](const QuantizedTensor& a, const QuantizedTensor& b) {
    return a.rows == b.rows && a.cols == b.cols && a.rotation_size == b.rotation_size && a.tensor_scale == b.tensor_scale &&
           a.codes == b.codes && a.scales == b.scales && a.trust_mask == b.trust_mask;
  };
  struct Side {
    QuantizerKind kind;
    int rotation;
  };
  const std::pair<Side, Side> pairs[] = {{{QuantizerKind::ms_eden_g16, 128}, {QuantizerKind::ms_eden_g16, 128}},
                                         {{QuantizerKind::sr, 0}, {QuantizerKind::sr, 16}},
                                         {{QuantizerKind::mxfp4_rtn, 32}, {QuantizerKind::mxfp4_sr, 32}}};
  for (const auto& [row, col] : pairs) {
    const QuantizerSpec row_spec = QuantizerSpec::defaults(row.kind), col_spec = QuantizerSpec::defaults(col.kind);
    const Rotation row_rot = row.rotation ? Rotation::random(row.rotation, {1, 2, 3}) : Rotation::none();
    const Rotation col_rot = col.rotation ? Rotation::random(col.rotation, {4, 5, 6}) : Rotation::none();
    const RandomContext row_rng{7, 1, 9}, col_rng{7, 2, 9};
    const auto [qr, qc] = be->quantize_both_ways(x, row_spec, row_rot, row_rng, col_spec, col_rot, col_rng);
    const std::string what = std::string(quantizer_name(row.kind)) + " / " + std::string(quantizer_name(col.kind));
    const QuantizedTensor r = be->download_quantized(qr), c = be->download_quantized(qc);
    EXPECT_EQ(r.rows, rows) << what;
    EXPECT_EQ(c.rows, cols) << what;
    EXPECT_TRUE(same(r, be->download_quantized(be->quantize(x, false, row_spec, row_rot, row_rng)))) << what << " row-wise";
    EXPECT_TRUE(same(c, be->download_quantized(be->quantize(x, true, col_spec, col_rot, col_rng)))) << what << " transposed";
    // The streams matter (every transposed quantizer here rounds stochastically): under the
    // row-wise stream the transposed side is another tensor.
    EXPECT_FALSE(same(c, be->download_quantized(be->quantize(x, true, col_spec, col_rot, row_rng)))) << what;
  }
  // Offenders at (3, 70) and (90, 2): the transposed call's first would be (2, 90).
  values[static_cast<std::size_t>(3 * cols + 70)] = std::nan("");
  values[static_cast<std::size_t>(90 * cols + 2)] = std::nan("");
  be->upload(x, values);
  const QuantizerSpec eden = QuantizerSpec::defaults(QuantizerKind::ms_eden_g16);
  const Rotation rot = Rotation::random(128, {1, 2, 3});
  try {
    be->quantize_both_ways(x, eden, rot, {}, eden, rot, {});
    ADD_FAILURE() << "no NonFiniteError";
  } catch (const NonFiniteError& e) {
    EXPECT_NE(std::string(e.what()).find("element (3, 70) of the 256 x 128 tensor"), std::string::npos) << e.what();
  }
}

// The FP32 backend stores activations in BF16: every stored value is a BF16 number.
TEST(CpuFloatBackend, ActivationsAreStoredInBf16) {
  auto be = make_cpu_backend();
  EXPECT_EQ(be->activation_dtype(), DType::bf16);
  EXPECT_EQ(be->param_dtype(), DType::f32);
  Tensor x = be->empty({2, 16}, DType::bf16), w = be->empty({16}, DType::f32);
  be->upload(x, random_values(32, 14));
  be->upload(w, random_values(16, 15));
  Tensor out = be->empty({2, 16}, DType::bf16), rstd = be->empty({2}, DType::f32);
  be->rmsnorm_forward(out, rstd, x, w, 1e-5);
  for (double v : be->download(out)) EXPECT_EQ(static_cast<float>(v), round_to_bf16(static_cast<float>(v)));
  // Float and double backends agree to BF16 accuracy.
  auto ref = make_cpu_reference_backend();
  Tensor xr = ref->empty({2, 16}, DType::f64), wr = ref->empty({16}, DType::f64);
  ref->upload(xr, be->download(x));
  ref->upload(wr, be->download(w));
  Tensor outr = ref->empty({2, 16}, DType::f64), rstdr = ref->empty({2}, DType::f64);
  ref->rmsnorm_forward(outr, rstdr, xr, wr, 1e-5);
  const auto a = be->download(out), b = ref->download(outr);
  for (std::size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], std::fabs(b[i]) * 0x1p-8 + 1e-6);
}

}  // namespace
}  // namespace quartet

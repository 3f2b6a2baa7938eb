// The fused flash-attention kernels against the CPU's FP64 reference (run on the GPU machine;
// every test skips without a GPU).
//
// Tolerance. The fused kernels take the rotated q and k in BF16 (the tensor cores' input type),
// so their exact target is attention of those BF16 values: `bf16_qk_reference` below computes it
// in FP64 (rotated q and k rounded to BF16, nothing else rounded; the gradients flow through that
// rounding unchanged, as they do on the GPU). Rounding q and k moves a score by about 2^-9 of
// |q||k|, which with peaked scores moves the output far more than any later rounding, so the
// error is measured against that reference. What remains are the roundings of the probabilities
// (forward) and of P and dS (backward) to BF16 before their products, the FP32 accumulation and
// the output's rounding. The CPU FP32 backend's own error against the FP64 reference is mostly
// its output's BF16 rounding; each remaining GPU rounding costs about as much, so per output
// tensor we require
//   max |gpu - bf16_qk_reference| <= 4 max |cpu_fp32 - fp64| + 2^-9 max |fp64|,
// four times the FP32 path's error plus one BF16 rounding of the largest value (FlashAttention's
// own test criterion, "twice the error of a PyTorch implementation in the same precision",
// widened by the roundings our FP32 reference does not make).
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <random>

#include "quartet/backend/cuda.h"
#include "quartet/error.h"
#include "quartet/numerics/bf16.h"

namespace quartet {
namespace {

std::vector<double> normal_values(std::size_t n, std::uint64_t seed, double scale) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> normal(0.0, scale);
  std::vector<double> v(n);
  for (double& x : v) x = normal(gen);
  return v;
}

double max_abs(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::fabs(x));
  return m;
}

double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

struct Outputs {
  std::vector<double> out, dqkv;
};

// Causal GQA attention and its gradient in FP64 with the rotated q and k rounded to BF16, what
// the fused kernels compute exactly up to their later roundings (see the header). The RoPE
// tables are the backends' (angles in double, stored in FP32); the rotation is then exact in
// double before its one rounding to BF16.
Outputs bf16_qk_reference(const AttentionShape& s, const std::vector<double>& qkv, const std::vector<double>& dout) {
  const std::int64_t B = s.batch, T = s.seq, H = s.heads, KV = s.kv_heads, D = s.head_dim, half = D / 2;
  const std::int64_t W = s.qkv_width(), group = H / KV;
  std::vector<double> cs(static_cast<std::size_t>(T * half)), sn(cs.size());
  for (std::int64_t t = 0; t < T; ++t) {
    for (std::int64_t i = 0; i < half; ++i) {
      const double angle = static_cast<double>(t) * std::pow(s.rope_theta, -2.0 * static_cast<double>(i) / static_cast<double>(D));
      cs[static_cast<std::size_t>(t * half + i)] = static_cast<float>(std::cos(angle));
      sn[static_cast<std::size_t>(t * half + i)] = static_cast<float>(std::sin(angle));
    }
  }
  const auto at = [&](std::int64_t n, std::int64_t slot) { return static_cast<std::size_t>(n * W + slot * D); };
  // Rotated q | k per token, [tokens][H + KV][D], rounded to BF16.
  std::vector<double> qk(static_cast<std::size_t>(B * T * (H + KV) * D));
  for (std::int64_t n = 0; n < B * T; ++n) {
    const std::int64_t t = n % T;
    for (std::int64_t slot = 0; slot < H + KV; ++slot) {
      for (std::int64_t i = 0; i < half; ++i) {
        const double a = qkv[at(n, slot) + static_cast<std::size_t>(i)], b = qkv[at(n, slot) + static_cast<std::size_t>(i + half)];
        const double c = cs[static_cast<std::size_t>(t * half + i)], si = sn[static_cast<std::size_t>(t * half + i)];
        const std::size_t o = static_cast<std::size_t>((n * (H + KV) + slot) * D + i);
        qk[o] = round_to_bf16(static_cast<float>(a * c - b * si));
        qk[o + static_cast<std::size_t>(half)] = round_to_bf16(static_cast<float>(b * c + a * si));
      }
    }
  }
  const auto q_of = [&](std::int64_t n, std::int64_t h) { return &qk[static_cast<std::size_t>((n * (H + KV) + h) * D)]; };
  const auto k_of = [&](std::int64_t n, std::int64_t g) { return &qk[static_cast<std::size_t>((n * (H + KV) + H + g) * D)]; };
  const auto v_of = [&](std::int64_t n, std::int64_t g) { return &qkv[at(n, H + KV + g)]; };
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  Outputs r;
  r.out.assign(static_cast<std::size_t>(B * T * H * D), 0.0);
  std::vector<double> dqk(qk.size(), 0.0);
  r.dqkv.assign(qkv.size(), 0.0);
#pragma omp parallel for schedule(dynamic)
  for (std::int64_t bg = 0; bg < B * KV; ++bg) {  // a task owns one kv head: its dk, dv rows
    const std::int64_t b = bg / KV, g = bg % KV;
    std::vector<double> p(static_cast<std::size_t>(T)), dp(static_cast<std::size_t>(T));
    for (std::int64_t h = g * group; h < (g + 1) * group; ++h) {
      for (std::int64_t t = 0; t < T; ++t) {
        const std::int64_t n = b * T + t;
        double mx = -INFINITY;
        for (std::int64_t u = 0; u <= t; ++u) {
          double dot = 0;
          for (std::int64_t d = 0; d < D; ++d) dot += q_of(n, h)[d] * k_of(b * T + u, g)[d];
          p[static_cast<std::size_t>(u)] = dot * scale;
          mx = std::max(mx, p[static_cast<std::size_t>(u)]);
        }
        double sum = 0;
        for (std::int64_t u = 0; u <= t; ++u) sum += p[static_cast<std::size_t>(u)] = std::exp(p[static_cast<std::size_t>(u)] - mx);
        double* o = &r.out[static_cast<std::size_t>((n * H + h) * D)];
        const double* go = &dout[static_cast<std::size_t>((n * H + h) * D)];
        double pdp = 0;
        for (std::int64_t u = 0; u <= t; ++u) {
          const double pu = p[static_cast<std::size_t>(u)] /= sum;
          double acc = 0;
          for (std::int64_t d = 0; d < D; ++d) {
            o[d] += pu * v_of(b * T + u, g)[d];
            acc += go[d] * v_of(b * T + u, g)[d];
            r.dqkv[at(b * T + u, H + KV + g) + static_cast<std::size_t>(d)] += pu * go[d];
          }
          dp[static_cast<std::size_t>(u)] = acc;
          pdp += pu * acc;
        }
        for (std::int64_t u = 0; u <= t; ++u) {
          const double ds = p[static_cast<std::size_t>(u)] * (dp[static_cast<std::size_t>(u)] - pdp) * scale;
          for (std::int64_t d = 0; d < D; ++d) {
            dqk[static_cast<std::size_t>((n * (H + KV) + h) * D + d)] += ds * k_of(b * T + u, g)[d];
            dqk[static_cast<std::size_t>(((b * T + u) * (H + KV) + H + g) * D + d)] += ds * q_of(n, h)[d];
          }
        }
      }
    }
  }
  for (std::int64_t n = 0; n < B * T; ++n) {  // the gradients back through the rotation
    const std::int64_t t = n % T;
    for (std::int64_t slot = 0; slot < H + KV; ++slot) {
      for (std::int64_t i = 0; i < half; ++i) {
        const std::size_t o = static_cast<std::size_t>((n * (H + KV) + slot) * D + i);
        const double a = dqk[o], b = dqk[o + static_cast<std::size_t>(half)];
        const double c = cs[static_cast<std::size_t>(t * half + i)], si = sn[static_cast<std::size_t>(t * half + i)];
        r.dqkv[at(n, slot) + static_cast<std::size_t>(i)] = a * c + b * si;
        r.dqkv[at(n, slot) + static_cast<std::size_t>(i + half)] = b * c - a * si;
      }
    }
  }
  return r;
}

class FlashAttention : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!cuda_available()) GTEST_SKIP() << cuda_device_description();
    gpu = make_cuda_backend();
    cpu = make_cpu_backend();
    ref = make_cpu_reference_backend();
  }

  // Forward and backward of one backend from the same (BF16-exact) inputs.
  static Outputs run(Backend& be, const AttentionShape& s, const std::vector<double>& qkv,
                     const std::vector<double>& dout) {
    const DType act = be.activation_dtype();
    Tensor x = be.empty({s.tokens(), s.qkv_width()}, act), o = be.empty({s.tokens(), s.q_width()}, act);
    Tensor g = be.empty({s.tokens(), s.q_width()}, act), dx = be.empty({s.tokens(), s.qkv_width()}, act);
    be.upload(x, qkv);
    be.upload(g, dout);
    AttentionSaved saved;
    be.attention_forward(o, saved, x, s);
    be.attention_backward(dx, g, x, saved, s);
    return {be.download(o), be.download(dx)};
  }

  void check(const AttentionShape& s, double input_scale, std::uint64_t seed) {
    // Values rounded to BF16 once (through the CPU backend's BF16 storage), so that every
    // backend starts from the same numbers.
    const auto bf16_exact = [&](std::vector<double> v, const Shape& shape) {
      Tensor t = cpu->empty(shape, DType::bf16);
      cpu->upload(t, v);
      return cpu->download(t);
    };
    const auto qkv = bf16_exact(normal_values(static_cast<std::size_t>(s.tokens() * s.qkv_width()), seed, input_scale),
                                {s.tokens(), s.qkv_width()});
    const auto dout = bf16_exact(normal_values(static_cast<std::size_t>(s.tokens() * s.q_width()), seed + 1, 1.0),
                                 {s.tokens(), s.q_width()});
    const Outputs r = run(*ref, s, qkv, dout), c = run(*cpu, s, qkv, dout), g = run(*gpu, s, qkv, dout);
    const Outputs e = bf16_qk_reference(s, qkv, dout);
    const std::string what = "batch " + std::to_string(s.batch) + " seq " + std::to_string(s.seq) + " heads " +
                             std::to_string(s.heads) + "/" + std::to_string(s.kv_heads) + " dim " +
                             std::to_string(s.head_dim) + " scale " + std::to_string(input_scale);
    for (const auto& [name, gv, cv, rv, ev] : {std::tuple{"output", &g.out, &c.out, &r.out, &e.out},
                                              std::tuple{"dqkv", &g.dqkv, &c.dqkv, &r.dqkv, &e.dqkv}}) {
      const double gpu_error = max_abs_diff(*gv, *ev), cpu_error = max_abs_diff(*cv, *rv);
      const double bound = 4 * cpu_error + std::ldexp(max_abs(*rv), -9);
      EXPECT_LE(gpu_error, bound) << what << " " << name << ": gpu error " << gpu_error << " (against the BF16-q/k "
                                  << "reference; " << max_abs_diff(*gv, *rv) << " against FP64), cpu fp32 error "
                                  << cpu_error << ", max |ref| " << max_abs(*rv);
      // The reference itself must be the FP64 one up to the q/k rounding: a sanity check of it.
      EXPECT_LE(max_abs_diff(*ev, *rv), 64 * cpu_error + std::ldexp(max_abs(*rv), -5)) << what << " " << name;
      RecordProperty(std::string(name) + "_error_ratio_" + std::to_string(s.seq) + "_" + std::to_string(s.head_dim),
                     std::to_string(gpu_error / std::max(cpu_error, 1e-30)));
    }
  }

  std::unique_ptr<Backend> gpu, cpu, ref;
};

TEST_F(FlashAttention, MatchesTheReferenceAcrossShapes) {
  // head dims 64 and 128; grouped-query heads; seq 1, odd, not a multiple of any tile, several tiles.
  check({2, 33, 4, 2, 64}, 1.0, 1);
  check({1, 1, 2, 1, 128}, 1.0, 2);
  check({2, 77, 4, 4, 128}, 1.0, 3);
  check({1, 200, 8, 2, 64}, 1.0, 4);
  check({3, 130, 2, 1, 128}, 1.0, 5);
}

TEST_F(FlashAttention, MatchesTheReferenceWithPeakedScores) {
  // Larger inputs make the softmax nearly one-hot: the running maximum must be exact.
  check({2, 96, 4, 2, 64}, 3.0, 6);
  check({1, 150, 2, 2, 128}, 3.0, 7);
}

TEST_F(FlashAttention, MatchesTheReferenceAtSeq4096) {
  check({1, 4096, 2, 1, 64}, 1.0, 8);
}

TEST_F(FlashAttention, BackwardIsDeterministic) {
  // Many key blocks contribute to each query block (seq 1000: 16 key blocks).
  for (const AttentionShape s : {AttentionShape{2, 300, 8, 2, 128}, AttentionShape{3, 1000, 4, 1, 64}}) {
    const auto qkv = normal_values(static_cast<std::size_t>(s.tokens() * s.qkv_width()), 9, 1.0);
    const auto dout = normal_values(static_cast<std::size_t>(s.tokens() * s.q_width()), 10, 1.0);
    const Outputs a = run(*gpu, s, qkv, dout), b = run(*gpu, s, qkv, dout);
    EXPECT_EQ(a.out, b.out);
    EXPECT_EQ(a.dqkv, b.dqkv) << "the same inputs give the same gradient bits (seq " << s.seq << ")";
  }
}

TEST_F(FlashAttention, AgreesWithTheReferenceKernelsOnTheGpu) {
  // The reference kernels stay selectable; both paths must agree within the tolerance above.
  auto reference = make_cuda_backend(CudaBackendOptions{.reference_attention = true});
  ASSERT_NE(reference->name().find("reference attention"), std::string::npos);
  const AttentionShape s{2, 70, 4, 2, 64};
  const auto qkv = normal_values(static_cast<std::size_t>(s.tokens() * s.qkv_width()), 11, 1.0);
  const auto dout = normal_values(static_cast<std::size_t>(s.tokens() * s.q_width()), 12, 1.0);
  const Outputs f = run(*gpu, s, qkv, dout), r = run(*reference, s, qkv, dout), x = run(*ref, s, qkv, dout);
  EXPECT_LE(max_abs_diff(f.out, r.out), 4 * max_abs_diff(r.out, x.out) + std::ldexp(max_abs(x.out), -9));
  EXPECT_LE(max_abs_diff(f.dqkv, r.dqkv), 4 * max_abs_diff(r.dqkv, x.dqkv) + std::ldexp(max_abs(x.dqkv), -9));
}

// The fused backward (dQ added in order by the key-block kernel) is selectable: it must meet the
// same bounds, agree with the default split kernels, and an unknown choice is refused.
class FusedBackward : public FlashAttention {
 protected:
  void SetUp() override {
    FlashAttention::SetUp();
    setenv("QUARTET_ATTENTION_BACKWARD", "fused", 1);
  }
  void TearDown() override { unsetenv("QUARTET_ATTENTION_BACKWARD"); }
};

TEST_F(FusedBackward, MatchesTheReferenceAcrossShapes) {
  check({2, 33, 4, 2, 64}, 1.0, 21);
  check({2, 77, 4, 4, 128}, 1.0, 22);
  check({1, 200, 8, 2, 64}, 3.0, 23);
}

TEST_F(FusedBackward, IsDeterministicAndAgreesWithTheSplitBackward) {
  const AttentionShape s{2, 1000, 8, 2, 128};  // 16 key blocks add to the last query blocks
  const auto qkv = normal_values(static_cast<std::size_t>(s.tokens() * s.qkv_width()), 24, 1.0);
  const auto dout = normal_values(static_cast<std::size_t>(s.tokens() * s.q_width()), 25, 1.0);
  const Outputs fused = run(*gpu, s, qkv, dout), again = run(*gpu, s, qkv, dout);
  EXPECT_EQ(fused.dqkv, again.dqkv) << "the same inputs give the same gradient bits";
  unsetenv("QUARTET_ATTENTION_BACKWARD");
  const Outputs split = run(*gpu, s, qkv, dout), x = run(*ref, s, qkv, dout);
  EXPECT_EQ(split.out, fused.out) << "one forward kernel";
  // The two differ only in the order dQ's FP32 contributions are summed.
  EXPECT_LE(max_abs_diff(split.dqkv, fused.dqkv), std::ldexp(max_abs(x.dqkv), -8));
  EXPECT_NE(split.dqkv, std::vector<double>(split.dqkv.size(), 0.0));
  // dK and dV come from the same products in both: the split kernels rotate dK back in their
  // epilogue, the fused path through its FP32 buffer and the RoPE pass, with the same FP32
  // operations, so their bits agree.
  const std::int64_t width = s.qkv_width(), q_cols = s.q_width();
  std::size_t differing = 0;
  for (std::int64_t t = 0; t < s.tokens(); ++t) {
    for (std::int64_t c = q_cols; c < width; ++c) {
      const std::size_t i = static_cast<std::size_t>(t * width + c);
      differing += split.dqkv[i] != fused.dqkv[i];
    }
  }
  EXPECT_EQ(differing, 0u) << "dK and dV elements whose bits differ between split and fused";
}

// The backward on warpgroup products (QUARTET_ATTENTION_BACKWARD=wgmma: on an sm_90 GPU, the split
// kernels elsewhere) must meet the same bounds and be deterministic.
class WgmmaBackward : public FlashAttention {
 protected:
  void SetUp() override {
    FlashAttention::SetUp();
    setenv("QUARTET_ATTENTION_BACKWARD", "wgmma", 1);
  }
  void TearDown() override { unsetenv("QUARTET_ATTENTION_BACKWARD"); }
};

TEST_F(WgmmaBackward, MatchesTheReferenceAcrossShapes) {
  // seq 1; ragged seqs; grouped-query heads (the key kernel walks every head of its group);
  // a block of 128 keys whose second warpgroup sees no query of the first query block; peaked
  // scores; several key and query blocks.
  check({1, 1, 2, 1, 128}, 1.0, 50);
  check({2, 77, 4, 4, 128}, 1.0, 51);
  check({3, 130, 4, 2, 128}, 1.0, 52);
  check({1, 150, 2, 2, 128}, 3.0, 53);
  check({1, 600, 4, 1, 128}, 1.0, 54);
  check({2, 256, 4, 2, 128}, 1.0, 62);  // whole tiles, no padding row: the training shapes' case
}

TEST_F(WgmmaBackward, IsDeterministicAndAgreesWithTheSplitBackward) {
  const AttentionShape s{2, 1000, 8, 2, 128};
  const auto qkv = normal_values(static_cast<std::size_t>(s.tokens() * s.qkv_width()), 55, 1.0);
  const auto dout = normal_values(static_cast<std::size_t>(s.tokens() * s.q_width()), 56, 1.0);
  const Outputs wgmma = run(*gpu, s, qkv, dout), again = run(*gpu, s, qkv, dout);
  EXPECT_EQ(wgmma.dqkv, again.dqkv) << "the same inputs give the same gradient bits";
  EXPECT_NE(wgmma.dqkv, std::vector<double>(wgmma.dqkv.size(), 0.0));
  unsetenv("QUARTET_ATTENTION_BACKWARD");
  const Outputs split = run(*gpu, s, qkv, dout), x = run(*ref, s, qkv, dout);
  // Both sum the same BF16 products in FP32, in other orders, so a probability or dS can round
  // to a neighbouring BF16 value: the two agree within the reference bound of each.
  const double bound = 4 * max_abs_diff(split.dqkv, x.dqkv) + std::ldexp(max_abs(x.dqkv), -9);
  EXPECT_LE(max_abs_diff(wgmma.dqkv, split.dqkv), bound);
}

TEST_F(WgmmaBackward, MatchesTheReferenceAtHeadDim64) {
  check({2, 33, 4, 2, 64}, 1.0, 57);
  check({1, 200, 8, 2, 64}, 3.0, 58);
  check({3, 1000, 4, 1, 64}, 1.0, 59);
  const AttentionShape s{3, 1000, 4, 1, 64};
  const auto qkv = normal_values(static_cast<std::size_t>(s.tokens() * s.qkv_width()), 60, 1.0);
  const auto dout = normal_values(static_cast<std::size_t>(s.tokens() * s.q_width()), 61, 1.0);
  const Outputs a = run(*gpu, s, qkv, dout), b = run(*gpu, s, qkv, dout);
  EXPECT_EQ(a.dqkv, b.dqkv) << "the same inputs give the same gradient bits";
}

TEST_F(FlashAttention, TheMmaForwardStaysSelectable) {
  // Head dim 128 runs on wgmma where the GPU has it; the mma.sync kernel must keep its bounds.
  setenv("QUARTET_ATTENTION_FORWARD", "mma", 1);
  check({2, 77, 4, 4, 128}, 1.0, 40);
  check({1, 150, 2, 2, 128}, 3.0, 41);
  setenv("QUARTET_ATTENTION_FORWARD", "tma", 1);
  const AttentionShape s{1, 16, 2, 2, 128};
  Tensor x = gpu->zeros({s.tokens(), s.qkv_width()}, DType::bf16), o = gpu->empty({s.tokens(), s.q_width()}, DType::bf16);
  AttentionSaved saved;
  try {
    gpu->attention_forward(o, saved, x, s);
    ADD_FAILURE() << "an unknown forward kernel was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("tma"), std::string::npos) << e.what();
  }
  unsetenv("QUARTET_ATTENTION_FORWARD");
}

TEST_F(FusedBackward, RefusesAnUnknownChoice) {
  setenv("QUARTET_ATTENTION_BACKWARD", "atomic", 1);
  const AttentionShape s{1, 16, 2, 2, 64};
  Tensor x = gpu->zeros({s.tokens(), s.qkv_width()}, DType::bf16), o = gpu->empty({s.tokens(), s.q_width()}, DType::bf16);
  Tensor dx = gpu->empty(x.shape(), DType::bf16);
  AttentionSaved saved;
  gpu->attention_forward(o, saved, x, s);
  try {
    gpu->attention_backward(dx, o, x, saved, s);
    FAIL() << "an unknown backward was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("atomic"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("\"split\", \"fused\", \"wgmma\""), std::string::npos) << e.what();
  }
}

TEST_F(FlashAttention, LongSequencesNeedNoQuadraticMemory) {
  // seq 32768 x 8 heads: the reference's FP32 probability matrix alone would take 32 GiB; the
  // fused kernels' scratch is linear in the sequence (rotated q|k in BF16, dQ|dK in FP32, two
  // FP32 numbers per row): under 0.5 GiB here, measured as the memory pool's high-water mark.
  const AttentionShape s{1, 32768, 8, 8, 64};
  Tensor x = gpu->zeros({s.tokens(), s.qkv_width()}, DType::bf16), o = gpu->empty({s.tokens(), s.q_width()}, DType::bf16);
  Tensor dx = gpu->empty(x.shape(), DType::bf16);
  int device = 0;
  cudaMemPool_t pool = nullptr;
  ASSERT_EQ(cudaGetDevice(&device), cudaSuccess);
  ASSERT_EQ(cudaDeviceGetDefaultMemPool(&pool, device), cudaSuccess);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  std::uint64_t before = 0, high = 0;
  ASSERT_EQ(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrUsedMemCurrent, &before), cudaSuccess);
  std::uint64_t zero = 0;  // the high-water mark can only be reset to zero (then it counts from what is in use)
  ASSERT_EQ(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrUsedMemHigh, &zero), cudaSuccess);
  AttentionSaved saved;
  gpu->attention_forward(o, saved, x, s);
  gpu->attention_backward(dx, o, x, saved, s);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  ASSERT_EQ(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrUsedMemHigh, &high), cudaSuccess);
  EXPECT_LT(high - before, std::uint64_t{1} << 29) << "scratch beyond the inputs and outputs";
  EXPECT_EQ(max_abs(gpu->download(o)), 0.0) << "zero values give a zero output";
}

TEST_F(FlashAttention, RejectsBadShapes) {
  AttentionShape s{1, 8, 3, 2, 64};  // heads not a multiple of kv heads
  Tensor x = gpu->zeros({8, 7 * 64}, DType::bf16), o = gpu->empty({8, 3 * 64}, DType::bf16);
  AttentionSaved saved;
  EXPECT_THROW(gpu->attention_forward(o, saved, x, s), Error);
  const AttentionShape good{1, 8, 2, 2, 64};
  Tensor wrong = gpu->zeros({8, 5 * 64}, DType::bf16);  // not [tokens, (heads + 2 kv) * dim]
  EXPECT_THROW(gpu->attention_forward(o, saved, wrong, good), Error);
}

}  // namespace
}  // namespace quartet

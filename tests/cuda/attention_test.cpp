// The fused flash-attention kernels against the CPU's FP64 reference (run on the GPU machine;
// every test skips without a GPU).
//
// Tolerance. The CPU FP32 backend computes attention from the same BF16 inputs in FP32 and
// rounds only its output to BF16; the fused kernels also round the rotated q and k and the
// probabilities (forward), and dS and P (backward), to BF16 before each tensor-core product,
// accumulating in FP32. Each of those roundings perturbs the result by about as much as the
// output's own rounding, so per output tensor we require
//   max |gpu - fp64| <= 4 max |cpu_fp32 - fp64| + 2^-9 max |fp64|,
// four times the FP32 path's error plus one BF16 rounding of the largest value (FlashAttention's
// own test criterion, "twice the error of a PyTorch implementation in the same precision",
// widened by the roundings our FP32 reference does not make).
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "quartet/backend/cuda.h"
#include "quartet/error.h"

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
    const std::string what = "batch " + std::to_string(s.batch) + " seq " + std::to_string(s.seq) + " heads " +
                             std::to_string(s.heads) + "/" + std::to_string(s.kv_heads) + " dim " +
                             std::to_string(s.head_dim) + " scale " + std::to_string(input_scale);
    for (const auto& [name, gv, cv, rv] : {std::tuple{"output", &g.out, &c.out, &r.out},
                                          std::tuple{"dqkv", &g.dqkv, &c.dqkv, &r.dqkv}}) {
      const double gpu_error = max_abs_diff(*gv, *rv), cpu_error = max_abs_diff(*cv, *rv);
      const double bound = 4 * cpu_error + std::ldexp(max_abs(*rv), -9);
      EXPECT_LE(gpu_error, bound) << what << " " << name << ": gpu error " << gpu_error << ", cpu fp32 error "
                                  << cpu_error << ", max |ref| " << max_abs(*rv);
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
  const AttentionShape s{2, 300, 8, 2, 128};
  const auto qkv = normal_values(static_cast<std::size_t>(s.tokens() * s.qkv_width()), 9, 1.0);
  const auto dout = normal_values(static_cast<std::size_t>(s.tokens() * s.q_width()), 10, 1.0);
  const Outputs a = run(*gpu, s, qkv, dout), b = run(*gpu, s, qkv, dout);
  EXPECT_EQ(a.out, b.out);
  EXPECT_EQ(a.dqkv, b.dqkv) << "the same inputs give the same gradient bits";
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

TEST_F(FlashAttention, LongSequencesNeedNoQuadraticMemory) {
  // seq 32768 x 8 heads: the reference's FP32 probability matrix alone would take 32 GiB; the
  // fused kernels need a few MiB beyond their inputs and outputs.
  const AttentionShape s{1, 32768, 8, 8, 64};
  Tensor x = gpu->zeros({s.tokens(), s.qkv_width()}, DType::bf16), o = gpu->empty({s.tokens(), s.q_width()}, DType::bf16);
  AttentionSaved saved;
  gpu->attention_forward(o, saved, x, s);
  Tensor dx = gpu->empty(x.shape(), DType::bf16);
  gpu->attention_backward(dx, o, x, saved, s);
  const auto out = gpu->download(o);
  EXPECT_EQ(max_abs(out), 0.0) << "zero values give a zero output";
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

// The GEMM that reads its first operand in NVFP4 (gemm_fp4_operand.cu) against the exact product
// computed in FP64 on the CPU, on random codes, scales and BF16 values (run on the GPU machine;
// skipped without an sm_90 GPU). Tolerance: the kernel sums K exact products in FP32, so each
// output is within K 2^-24 sum|a b| of the exact sum (doubled here for the tensor cores'
// accumulation, which is not IEEE's order), plus the roundings of alpha's product and of the
// accumulated output (2^-23 of each term), plus half a BF16 ulp (2^-8 relative, generous) when
// the output is BF16.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "backend/cuda/device_memory.h"
#include "backend/cuda/gemm_fp4_operand.h"
#include "backend/cuda/quantize.h"
#include "quartet/backend/cuda.h"
#include "quartet/error.h"
#include "quartet/numerics/bf16.h"
#include "quartet/numerics/e2m1.h"
#include "quartet/numerics/e4m3.h"
#include "support/scoped_env.h"

namespace quartet {
namespace {

template <class T>
std::shared_ptr<void> to_device(const std::vector<T>& host) {
  auto p = cuda::device_alloc(host.size() * sizeof(T));
  EXPECT_EQ(cudaMemcpy(p.get(), host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  return p;
}

template <class T>
std::vector<T> to_host(const std::shared_ptr<void>& p, std::size_t n) {
  std::vector<T> host(n);
  EXPECT_EQ(cudaMemcpy(host.data(), p.get(), n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
  return host;
}

class GemmFp4Operand : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!cuda_available()) GTEST_SKIP() << cuda_device_description();
    if (!cuda::gemm_fp4_operand_fits(64, 64, 64)) GTEST_SKIP() << "the NVFP4-operand GEMM needs an sm_90 GPU";
  }
};

struct Case {
  std::int64_t m, n, k;
  bool bf16_out, accumulate;
};

// Random operands: every code byte, every finite non-negative E4M3 scale (subnormals and zero
// included), BF16 values of both signs over a few binades; alpha not a power of two. Each
// kernel and tile on every case.
TEST_F(GemmFp4Operand, IsTheExactProductWithinTheSummationBound) {
  const Case cases[] = {{128, 128, 64, false, false}, {200, 136, 192, false, false}, {1, 1, 64, false, false},
                        {257, 300, 1024, false, true}, {96, 130, 128, true, false}, {130, 64, 320, true, true},
                        {64, 384, 4096, false, false}, {640, 520, 512, false, false},
                        // Few k-tiles and many tiles: with two blocks, each runs several tiles of
                        // one or two k-tiles, the producer several tiles ahead of the consumers.
                        {600, 600, 64, false, false}, {300, 520, 128, true, false},
                        // Fewer tiles than SMs and a long k: the TMA kernel splits k (two tiles of
                        // 128 x 256 in eight runs; a BF16 output accumulated over four).
                        {192, 256, 4096, false, false}, {256, 200, 2048, true, true},
                        // Runs of 9 and 8 k-tiles (the shorter last run, an odd run's tail), an odd
                        // n (scalar partial stores), accumulated in FP32.
                        {64, 257, 1088, false, true}};
  // The kernels, chosen by the environment (gemm_fp4_operand.cu), each with both tiles: the
  // cp.async one, and the warp-specialised TMA one, whose grid is persistent: once as wide as the
  // device allows (a unit of work a block here), once two blocks wide (QUARTET_CUDA_MAX_BLOCKS), so
  // that each block runs several units and its stages' barriers carry their phases from one to the
  // next.
  struct Variant {
    const char* name;
    const char* kernel;
    const char* tile;
    const char* max_blocks;
  };
  const Variant variants[] = {{"cp-async 128x256", "cp-async", "128x256", ""},
                              {"cp-async 128x128", "cp-async", "128x128", ""},
                              {"tma 128x256", "tma", "128x256", ""},
                              {"tma 128x256, two blocks", "tma", "128x256", "2"},
                              {"tma 128x128", "tma", "128x128", ""},
                              {"tma 128x128, two blocks", "tma", "128x128", "2"}};
  std::mt19937_64 gen(2026);
  for (const Case& c : cases) {
    const std::string shape = std::to_string(c.m) + "x" + std::to_string(c.n) + "x" + std::to_string(c.k) +
                              (c.bf16_out ? " bf16" : " f32") + (c.accumulate ? " accumulate" : "");
    std::uniform_int_distribution<int> byte(0, 255), scale(0, 0x7E), exponent(-3, 3), mantissa(0, 127), coin(0, 1);
    std::vector<std::uint8_t> codes(static_cast<std::size_t>(c.m * c.k / 2)), scales(static_cast<std::size_t>(c.m * c.k / 16));
    for (auto& x : codes) x = static_cast<std::uint8_t>(byte(gen));
    for (auto& x : scales) x = static_cast<std::uint8_t>(scale(gen));
    std::vector<std::uint16_t> b(static_cast<std::size_t>(c.n * c.k));
    for (auto& x : b) {
      const float v = std::ldexp(1.0f + static_cast<float>(mantissa(gen)) / 128.0f, exponent(gen)) * (coin(gen) ? -1.0f : 1.0f);
      x = bf16_bits(v);  // exact: 8 significant bits
    }
    const float alpha = 0.7f;
    std::vector<float> init_f32(static_cast<std::size_t>(c.m * c.n));
    std::vector<std::uint16_t> init_bf16(init_f32.size());
    std::normal_distribution<float> normal(0.0f, 50.0f);
    for (std::size_t i = 0; i < init_f32.size(); ++i) {
      init_bf16[i] = bf16_bits(normal(gen));
      init_f32[i] = bf16_to_float(init_bf16[i]);
    }

    // The exact result and its tolerance, in FP64.
    std::vector<double> a(static_cast<std::size_t>(c.m * c.k));
    for (std::int64_t i = 0; i < c.m; ++i)
      for (std::int64_t l = 0; l < c.k; ++l) {
        const std::uint8_t byte_of = codes[static_cast<std::size_t>(i * c.k / 2 + l / 2)];
        const std::uint8_t code = l % 2 ? byte_of >> 4 : byte_of & 0xF;
        a[static_cast<std::size_t>(i * c.k + l)] =
            static_cast<double>(e2m1_decode(code)) * e4m3_decode(scales[static_cast<std::size_t>(i * c.k / 16 + l / 16)]);
      }
    std::vector<double> expected(init_f32.size()), tolerance(init_f32.size());
    for (std::int64_t i = 0; i < c.m; ++i)
      for (std::int64_t j = 0; j < c.n; ++j) {
        double sum = 0, sum_abs = 0;
        for (std::int64_t l = 0; l < c.k; ++l) {
          const double p = a[static_cast<std::size_t>(i * c.k + l)] * bf16_to_float(b[static_cast<std::size_t>(j * c.k + l)]);
          sum += p;
          sum_abs += std::fabs(p);
        }
        const std::size_t at = static_cast<std::size_t>(i * c.n + j);
        const double init = c.accumulate ? init_f32[at] : 0.0;
        expected[at] = init + alpha * sum;
        tolerance[at] = alpha * sum_abs * 2.0 * static_cast<double>(c.k) * std::ldexp(1.0, -24) +
                        std::ldexp(std::fabs(alpha * sum) + std::fabs(init), -23) + 1e-30 +
                        (c.bf16_out ? std::ldexp(std::fabs(expected[at]), -8) : 0.0);
      }

    const auto d_codes = to_device(codes), d_scales = to_device(scales), d_b = to_device(b);
    const auto d_alpha = to_device(std::vector<float>{alpha});
    for (const Variant& v : variants) {
      const std::string what = shape + " " + v.name;
      const testing::ScopedEnv kernel("QUARTET_FP4_OPERAND_KERNEL", v.kernel), tile("QUARTET_FP4_OPERAND_TILE", v.tile),
          blocks("QUARTET_CUDA_MAX_BLOCKS", v.max_blocks);
      const auto run = [&](const std::shared_ptr<void>& out, bool accumulate) {
        cuda::gemm_fp4_operand(out.get(), c.bf16_out ? DType::bf16 : DType::f32, d_codes.get(), d_scales.get(), d_b.get(),
                               c.m, c.n, c.k, static_cast<const float*>(d_alpha.get()), accumulate, nullptr);
      };
      const auto d_out = c.bf16_out ? to_device(init_bf16) : to_device(init_f32);
      run(d_out, c.accumulate);
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess) << what;
      std::vector<double> got(init_f32.size());
      if (c.bf16_out) {
        const auto h = to_host<std::uint16_t>(d_out, got.size());
        for (std::size_t i = 0; i < got.size(); ++i) got[i] = bf16_to_float(h[i]);
      } else {
        const auto h = to_host<float>(d_out, got.size());
        for (std::size_t i = 0; i < got.size(); ++i) got[i] = h[i];
      }
      int bad = 0;
      for (std::size_t at = 0; at < got.size(); ++at) {
        if (std::fabs(got[at] - expected[at]) > tolerance[at] && ++bad <= 3) {
          ADD_FAILURE() << what << " [" << at / static_cast<std::size_t>(c.n) << ", " << at % static_cast<std::size_t>(c.n)
                        << "]: gpu " << got[at] << " exact " << expected[at] << " tolerance " << tolerance[at];
        }
      }
      EXPECT_EQ(bad, 0) << what;
      if (!c.accumulate) {  // no atomics: the same inputs give the same bits
        const auto again = to_device(std::vector<float>(got.size(), 0.0f));
        run(again, false);
        const std::size_t bytes = got.size() * (c.bf16_out ? 2 : 4);
        EXPECT_EQ(std::memcmp(to_host<std::uint8_t>(again, bytes).data(), to_host<std::uint8_t>(d_out, bytes).data(), bytes), 0)
            << what << ": a second run gave other bits";
      }
    }
  }
}

TEST_F(GemmFp4Operand, SaysWhatDoesNotFit) {
  const auto buffer = cuda::device_alloc(1 << 16);
  for (const Case& c : {Case{64, 64, 48, false, false}, Case{0, 64, 64, false, false}, Case{64, 0, 64, false, false}}) {
    try {
      cuda::gemm_fp4_operand(buffer.get(), DType::f32, buffer.get(), buffer.get(), buffer.get(), c.m, c.n, c.k,
                             static_cast<const float*>(buffer.get()), false, nullptr);
      ADD_FAILURE() << c.m << "x" << c.n << "x" << c.k << " was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("does not fit (an sm_90 GPU, k a multiple of 64"), std::string::npos) << e.what();
    }
  }
}

// Through the backend: QUARTET_NVFP4_GEMM=fp4-operand gives the product of the quantized operands
// that the BF16-copies path gives, within twice the bound (each within it of the exact sum), for
// the forward's 4/6 operands and the backward's rotated MS-EDEN ones, also when the operands were
// quantized under the switch (without BF16 copies); an unknown value is named.
TEST_F(GemmFp4Operand, BackendSwitchAgreesWithTheCopiesPath) {
  auto gpu = make_cuda_backend();
  const std::int64_t m = 192, n = 160, k = 512;
  std::mt19937_64 gen(7);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<double> va(static_cast<std::size_t>(m * k)), vb(static_cast<std::size_t>(n * k));
  for (auto& x : va) x = normal(gen);
  for (auto& x : vb) x = normal(gen);
  Tensor ta = gpu->empty({m, k}, DType::bf16), tb = gpu->empty({n, k}, DType::bf16);
  gpu->upload(ta, va);
  gpu->upload(tb, vb);
  struct Setting {
    QuantizerKind kind;
    int rotation;
  };
  for (const Setting& s : {Setting{QuantizerKind::four_over_six, 0}, Setting{QuantizerKind::ms_eden_g16, 128}}) {
    const std::string what = std::string(quantizer_name(s.kind));
    const QuantizerSpec spec = QuantizerSpec::defaults(s.kind);
    const Rotation rot = s.rotation ? Rotation::random(s.rotation, {1, 2, 3}) : Rotation::none();
    // Each GEMM on operands of its own (the same seeds: the same codes and scales), since a GEMM
    // uses up the BF16 copies it reads. `passes`: the dequantization passes a GEMM ran (an sm_90
    // GPU's NVFP4 GEMM is the emulated one).
    const auto operands = [&] {
      return std::pair{gpu->quantize(ta, false, spec, rot, {4, 5, 6}), gpu->quantize(tb, false, spec, rot, {4, 5, 7})};
    };
    const auto passes = [&](Tensor& out, const std::pair<QTensor, QTensor>& q, const char* path) {
      const testing::ScopedEnv gemm("QUARTET_NVFP4_GEMM", path);
      const std::uint64_t before = cuda::dequantization_passes();
      gpu->gemm_quantized(out, q.first, q.second, false);
      return cuda::dequantization_passes() - before;
    };
    Tensor copies = gpu->empty({m, n}, DType::f32), fp4 = gpu->empty({m, n}, DType::f32);
    EXPECT_EQ(passes(copies, operands(), "copies"), 0u) << what << ": the copies path on operands with their copies";
    EXPECT_EQ(passes(fp4, operands(), "fp4-operand"), 0u) << what << ": the fp4-operand GEMM on operands with their copies";
    const auto [qa, qb] = operands();
    const QuantizedTensor ha = gpu->download_quantized(qa), hb = gpu->download_quantized(qb);
    const std::vector<double> c = gpu->download(copies), f = gpu->download(fp4);
    int bad = 0;
    for (std::int64_t i = 0; i < m; ++i)
      for (std::int64_t j = 0; j < n; ++j) {
        double sum_abs = 0;
        for (std::int64_t l = 0; l < k; ++l) sum_abs += std::fabs(static_cast<double>(ha.value(i, l)) * hb.value(j, l));
        const std::size_t at = static_cast<std::size_t>(i * n + j);
        const double tol = 4.0 * static_cast<double>(k) * std::ldexp(sum_abs, -24) + std::ldexp(std::fabs(c[at]), -22) + 1e-30;
        if (std::fabs(c[at] - f[at]) > tol && ++bad <= 3) {
          ADD_FAILURE() << what << " [" << i << ", " << j << "]: copies " << c[at] << " fp4-operand " << f[at] << " tolerance " << tol;
        }
      }
    EXPECT_EQ(bad, 0) << what;

    // Quantized while the switch is set, the operands carry no BF16 copies: the fp4-operand GEMM
    // makes B's by one dequantization pass, the copies path both by two, and the products are
    // bit for bit those of the operands quantized with their copies.
    std::pair<QTensor, QTensor> lazy, lazy2;
    {
      const testing::ScopedEnv fp4_operand("QUARTET_NVFP4_GEMM", "fp4-operand");
      lazy = operands();
      lazy2 = operands();
    }
    Tensor fp4_lazy = gpu->empty({m, n}, DType::f32), copies_lazy = gpu->empty({m, n}, DType::f32);
    EXPECT_EQ(passes(fp4_lazy, lazy, "fp4-operand"), 1u) << what << ": the fp4-operand GEMM on operands without copies";
    EXPECT_EQ(passes(copies_lazy, lazy2, "copies"), 2u) << what << ": the copies path on operands without copies";
    const auto same_bits = [](const std::vector<double>& x, const std::vector<double>& y) {
      return x.size() == y.size() && std::memcmp(x.data(), y.data(), x.size() * sizeof(double)) == 0;
    };
    EXPECT_TRUE(same_bits(gpu->download(fp4_lazy), f)) << what << ": fp4-operand, operands quantized without copies";
    EXPECT_TRUE(same_bits(gpu->download(copies_lazy), c)) << what << ": copies path, operands quantized without copies";
  }
  // An unknown value is named, by the GEMM (operands quantized before it is set) and by the
  // quantizers, which read the switch too.
  const QuantizerSpec rtn = QuantizerSpec::defaults(QuantizerKind::rtn);
  const QTensor ra = gpu->quantize(ta, false, rtn, Rotation::none(), {}), rb = gpu->quantize(tb, false, rtn, Rotation::none(), {});
  const testing::ScopedEnv fp8("QUARTET_NVFP4_GEMM", "fp8");
  Tensor out = gpu->empty({m, n}, DType::f32);
  const std::string expected = "QUARTET_NVFP4_GEMM must be \"copies\" or \"fp4-operand\", got \"fp8\"";
  try {
    gpu->gemm_quantized(out, ra, rb, false);
    ADD_FAILURE() << "QUARTET_NVFP4_GEMM=fp8 was accepted by the GEMM";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(expected), std::string::npos) << e.what();
  }
  try {
    (void)gpu->quantize(ta, false, rtn, Rotation::none(), {});
    ADD_FAILURE() << "QUARTET_NVFP4_GEMM=fp8 was accepted by the quantizer";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(expected), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace quartet

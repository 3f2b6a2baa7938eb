// The CUDA backend against the CPU backend on fresh random inputs (run on the GPU machine;
// every test skips without a GPU).
//
// Bitwise: quantized codes, block scales, tensor scales and trust masks (the kernels call the
// CPU's group functions, and the RHT is computed in double exactly as on the CPU), requant,
// square-block transposes, embeddings and element-wise adds.
// Tolerances, where the summation order differs:
//  * GEMMs accumulate K products in FP32 in another order: |gpu - cpu| <= 2 K 2^-24 sum|a b|
//    per output (each side within K 2^-24 sum|a b| of the exact value), plus one BF16 ulp
//    (2^-8 relative) when the output is stored in BF16;
//  * exp/log (libdevice vs glibc) differ by an ulp: BF16 outputs of the reference attention
//    kernels within one BF16 ulp.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <functional>
#include <random>
#include <set>

#include "backend/cuda/device_memory.h"
#include "backend/cuda/quantize.h"
#include "quartet/backend/cuda.h"
#include "quartet/error.h"
#include "quartet/nn/linear.h"
#include "quartet/nn/llama.h"
#include "support/scoped_env.h"

namespace quartet {
namespace {

std::vector<double> random_values(std::size_t n, std::uint64_t seed, double scale = 1.0, bool row_scales = false,
                                  std::size_t cols = 1) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> normal(0.0, scale);
  std::vector<double> v(n);
  for (std::size_t i = 0; i < n; ++i) {
    v[i] = normal(gen);
    if (row_scales) v[i] *= std::exp2(8.0 * static_cast<double>(i / cols % 17) / 16.0);
  }
  return v;
}

class Cuda : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!cuda_available()) GTEST_SKIP() << cuda_device_description();
    gpu = make_cuda_backend();
    cpu = make_cpu_backend();
  }

  // The same values on both backends.
  std::pair<Tensor, Tensor> pair(const Shape& shape, DType dtype, const std::vector<double>& values) {
    Tensor a = cpu->empty(shape, dtype), b = gpu->empty(shape, dtype);
    cpu->upload(a, values);
    gpu->upload(b, cpu->download(a));  // after the CPU's BF16 rounding: identical inputs
    return {a, b};
  }

  std::unique_ptr<Backend> gpu, cpu;
};

void expect_same_quantized(const QuantizedTensor& a, const QuantizedTensor& b, const std::string& what) {
  ASSERT_EQ(a.rows, b.rows) << what;
  ASSERT_EQ(a.cols, b.cols) << what;
  EXPECT_EQ(a.tensor_scale, b.tensor_scale) << what;
  EXPECT_EQ(a.rotation_size, b.rotation_size) << what;
  std::size_t code_diff = 0, scale_diff = 0;
  for (std::size_t i = 0; i < a.codes.size(); ++i) code_diff += a.codes[i] != b.codes[i];
  for (std::size_t i = 0; i < a.scales.size(); ++i) scale_diff += a.scales[i] != b.scales[i];
  EXPECT_EQ(code_diff, 0u) << what << ": code bytes differ";
  EXPECT_EQ(scale_diff, 0u) << what << ": scale bytes differ";
  EXPECT_EQ(a.trust_mask, b.trust_mask) << what;
}

std::string fmt_case(QuantizerKind kind, int rotation, bool transpose, std::int64_t rows, std::int64_t cols) {
  return std::string(quantizer_name(kind)) + " RHT-" + std::to_string(rotation) + (transpose ? " transposed " : " ") +
         std::to_string(rows) + "x" + std::to_string(cols);
}

struct QuantCase {
  QuantizerKind kind;
  int rotation;
};

const QuantCase kQuantCases[] = {
    {QuantizerKind::rtn, 0},           {QuantizerKind::four_over_six, 0}, {QuantizerKind::square16, 0},
    {QuantizerKind::sr, 0},            {QuantizerKind::sr, 16},           {QuantizerKind::sr, 32},
    {QuantizerKind::ms_eden_g16, 128}, {QuantizerKind::ms_eden_g128, 128}, {QuantizerKind::mxfp4_quest, 32},
    {QuantizerKind::mxfp4_rtn, 32},    {QuantizerKind::mxfp4_sr, 32},     {QuantizerKind::rtn, 128},
    {QuantizerKind::mxfp4_quest, 0},   {QuantizerKind::mxfp4_rtn, 0},
};

// Running out of GPU memory names the size asked for, what the device has, and the flags that
// lower it; the failure is not sticky (later allocations and kernels work).
TEST_F(Cuda, OutOfMemorySaysHowMuchAndWhatToLower) {
  std::string message;
  try {
    Tensor huge = gpu->empty({std::int64_t{1} << 20, std::int64_t{1} << 20}, DType::f32);  // 4 TiB
  } catch (const Error& e) {
    message = e.what();
  }
  EXPECT_NE(message.find("out of GPU memory: 4096.00 GiB more were needed"), std::string::npos) << message;
  EXPECT_NE(message.find("GiB free of"), std::string::npos) << message;
  EXPECT_NE(message.find("--batch"), std::string::npos) << message;
  Tensor small = gpu->empty({64}, DType::f32);
  gpu->fill(small, 2.0);
  EXPECT_EQ(gpu->download(small)[63], 2.0);
}

// The benchmarks' spin keeps the device busy for at least the time asked (it counts cycles of a
// clock no faster than 2 GHz), so that what is queued behind it starts after it; a time outside
// [0, 1000] ms is refused.
TEST_F(Cuda, SpinHoldsTheDeviceAtLeastTheTimeAsked) {
  cudaEvent_t before = nullptr, after = nullptr;
  ASSERT_EQ(cudaEventCreate(&before), cudaSuccess);
  ASSERT_EQ(cudaEventCreate(&after), cudaSuccess);
  for (const double ms : {2.0, 10.0}) {
    ASSERT_EQ(cudaEventRecord(before, nullptr), cudaSuccess);
    cuda_spin(ms);
    ASSERT_EQ(cudaEventRecord(after, nullptr), cudaSuccess);
    ASSERT_EQ(cudaEventSynchronize(after), cudaSuccess);
    float elapsed = 0;
    ASSERT_EQ(cudaEventElapsedTime(&elapsed, before, after), cudaSuccess);
    EXPECT_GE(elapsed, ms * 0.999) << "asked " << ms << " ms";
    EXPECT_LT(elapsed, ms * 4 + 5) << "asked " << ms << " ms";  // a clock of at least 500 MHz
  }
  cudaEventDestroy(before);
  cudaEventDestroy(after);
  EXPECT_THROW(cuda_spin(-1.0), Error);
  EXPECT_THROW(cuda_spin(1001.0), Error);
  EXPECT_THROW(cuda_spin(std::nan("")), Error);
}

TEST_F(Cuda, QuantizersAreBitwiseIdenticalToTheCpu) {
  for (const QuantCase& qc : kQuantCases) {
    for (bool transpose : {false, true}) {
      for (DType dtype : {DType::bf16, DType::f32}) {
        const std::int64_t rows = 128, cols = 256;  // transposed, 128 rows meet RHT-128 too
        auto [x_cpu, x_gpu] = pair({rows, cols}, dtype, random_values(rows * cols, 7 + qc.rotation, 1.0, true, cols));
        const QuantizerSpec spec = QuantizerSpec::defaults(qc.kind);
        const Rotation rot = qc.rotation ? Rotation::random(qc.rotation, {3, 4, 5}) : Rotation::none();
        const RandomContext rng{11, 12, 13};
        const std::string what = std::string(quantizer_name(qc.kind)) + " RHT-" + std::to_string(qc.rotation) +
                                 (transpose ? " transposed " : " ") + dtype_name(dtype);
        expect_same_quantized(cpu->download_quantized(cpu->quantize(x_cpu, transpose, spec, rot, rng)),
                              gpu->download_quantized(gpu->quantize(x_gpu, transpose, spec, rot, rng)), what);
      }
    }
  }
}

void expect_gemm_close(const std::vector<double>& g, const std::vector<double>& c, const std::vector<double>& bound,
                       bool bf16, const std::string& what);
void expect_quantized_gemm_matches(Backend& cpu, Backend& gpu, const Tensor& a_cpu, const Tensor& a_gpu, const Tensor& b_cpu,
                                   const Tensor& b_gpu, const QuantizerSpec& s, const std::string& what);

// Every fused quantizer (row-wise, transposed, each rotation the reduction fits, requant) on
// the given shapes against the CPU, bitwise.
void expect_fused_kernels_match(Backend& cpu, Backend& gpu, const std::vector<std::pair<std::int64_t, std::int64_t>>& shapes,
                                const std::function<std::pair<Tensor, Tensor>(const Shape&, const std::vector<double>&)>& pair) {
  const QuantizerKind kinds[] = {QuantizerKind::rtn,         QuantizerKind::four_over_six, QuantizerKind::sr,
                                 QuantizerKind::ms_eden_g16, QuantizerKind::ms_eden_g128,  QuantizerKind::mxfp4_quest,
                                 QuantizerKind::mxfp4_rtn,   QuantizerKind::mxfp4_sr};
  for (auto [rows, cols] : shapes) {
    auto [x_cpu, x_gpu] = pair({rows, cols}, random_values(static_cast<std::size_t>(rows * cols), 17, 1.0, true, cols));
    for (QuantizerKind kind : kinds) {
      // MXFP4's fused kernels take Quartet I's rotations (none, 32); the others all sizes.
      const bool mx = quantizer_format(kind) == ElementFormat::mxfp4;
      const std::vector<int> rotations = mx ? std::vector<int>{0, 32} : std::vector<int>{0, 16, 128};
      for (bool transpose : {false, true}) {
        const std::int64_t reduction = transpose ? rows : cols;
        for (int rot : rotations) {
          if (rot && reduction % rot) continue;
          const Rotation r = rot ? Rotation::random(rot, {8, 9, 10}) : Rotation::none();
          const QuantizerSpec spec = QuantizerSpec::defaults(kind);
          const RandomContext rng{21, 22, 23};
          expect_same_quantized(cpu.download_quantized(cpu.quantize(x_cpu, transpose, spec, r, rng)),
                                gpu.download_quantized(gpu.quantize(x_gpu, transpose, spec, r, rng)),
                                fmt_case(kind, rot, transpose, rows, cols));
        }
      }
    }
    // Requant from the forward 4/6 tensor, as quartet2's backward does.
    const QTensor qc = cpu.quantize(x_cpu, false, QuantizerSpec::defaults(QuantizerKind::four_over_six), Rotation::none(), {1, 1, 1});
    const QTensor qg = gpu.quantize(x_gpu, false, QuantizerSpec::defaults(QuantizerKind::four_over_six), Rotation::none(), {1, 1, 1});
    for (QuantizerKind kind : {QuantizerKind::ms_eden_g16, QuantizerKind::sr}) {
      const Rotation r = rows % 128 == 0 ? Rotation::random(128, {4, 4, 4}) : Rotation::none();
      expect_same_quantized(cpu.download_quantized(cpu.requantize_transposed(qc, QuantizerSpec::defaults(kind), r, {3, 3, 3})),
                            gpu.download_quantized(gpu.requantize_transposed(qg, QuantizerSpec::defaults(kind), r, {3, 3, 3})),
                            "requant " + fmt_case(kind, r.size, true, rows, cols));
    }
    // Requant from the forward QuEST tensor (fixed Hadamard-32), as quartet1's backward does.
    const QuantizerSpec quest = QuantizerSpec::defaults(QuantizerKind::mxfp4_quest);
    const Rotation h32 = cols % 32 == 0 ? Rotation::hadamard(32) : Rotation::none();
    const QTensor mc = cpu.quantize(x_cpu, false, quest, h32, {1, 1, 1});
    const QTensor mg = gpu.quantize(x_gpu, false, quest, h32, {1, 1, 1});
    for (QuantizerKind kind : {QuantizerKind::mxfp4_rtn, QuantizerKind::mxfp4_sr}) {
      const Rotation r = rows % 32 == 0 ? Rotation::random(32, {4, 4, 4}) : Rotation::none();
      expect_same_quantized(cpu.download_quantized(cpu.requantize_transposed(mc, QuantizerSpec::defaults(kind), r, {3, 3, 3})),
                            gpu.download_quantized(gpu.requantize_transposed(mg, QuantizerSpec::defaults(kind), r, {3, 3, 3})),
                            "requant QuEST -> " + fmt_case(kind, r.size, true, rows, cols));
    }
  }
}

// The fused kernels' partial tiles (transposed inputs whose width is not a multiple of the
// 64-row tile, reductions that are not a multiple of 128) and padded reductions, on larger
// inputs than above: still bitwise the CPU's.
TEST_F(Cuda, FusedKernelsOnLargerAndRaggedShapes) {
  expect_fused_kernels_match(*cpu, *gpu, {{384, 1024}, {200, 264}, {136, 384}},
                             [&](const Shape& s, const std::vector<double>& v) { return pair(s, DType::bf16, v); });
}

// The same with the grid capped at two blocks (QUARTET_CUDA_MAX_BLOCKS), so every kernel runs
// many iterations of its grid-stride loop: the prefetch of the next group or tile, the
// barrier before a tile is reused, the dequantization's unrolled loop (through a GEMM).
TEST_F(Cuda, FusedKernelsAcrossGridStrideIterations) {
  setenv("QUARTET_CUDA_MAX_BLOCKS", "2", 1);
  expect_fused_kernels_match(*cpu, *gpu, {{384, 1024}, {200, 264}},
                             [&](const Shape& s, const std::vector<double>& v) { return pair(s, DType::bf16, v); });
  const std::int64_t m = 256, n = 48, k = 512;
  auto [a_cpu, a_gpu] = pair({m, k}, DType::bf16, random_values(m * k, 33));
  auto [b_cpu, b_gpu] = pair({n, k}, DType::f32, random_values(n * k, 34));
  expect_quantized_gemm_matches(*cpu, *gpu, a_cpu, a_gpu, b_cpu, b_gpu, QuantizerSpec::defaults(QuantizerKind::four_over_six),
                                "4/6 GEMM, two blocks");
  unsetenv("QUARTET_CUDA_MAX_BLOCKS");
}

TEST_F(Cuda, PaddedShapesTinyTensorsAndZeros) {
  for (QuantizerKind kind : kAllQuantizers) {
    for (auto [rows, cols, scale] : {std::tuple{37, 80, 1.0}, std::tuple{5, 40, 1e-31}, std::tuple{3, 64, 0.0},
                                     std::tuple{64, 128, 1e-31}}) {
      auto [x_cpu, x_gpu] = pair({rows, cols}, DType::bf16, random_values(static_cast<std::size_t>(rows * cols), 9, std::max(scale, 1e-300)));
      if (scale == 0.0) {
        cpu->fill(x_cpu, 0.0);
        gpu->fill(x_gpu, 0.0);
      }
      const QuantizerSpec spec = QuantizerSpec::defaults(kind);
      for (bool transposed : {false, true}) {  // the row-wise and the tile kernels
        expect_same_quantized(cpu->download_quantized(cpu->quantize(x_cpu, transposed, spec, Rotation::none(), {1, 2, 3})),
                              gpu->download_quantized(gpu->quantize(x_gpu, transposed, spec, Rotation::none(), {1, 2, 3})),
                              std::string(quantizer_name(kind)) + " " + std::to_string(rows) + "x" + std::to_string(cols) +
                                  (transposed ? " transposed" : ""));
      }
    }
  }
}

TEST_F(Cuda, RequantAndSquareTransposeAreBitwiseIdentical) {
  const std::int64_t rows = 128, cols = 256;
  auto [x_cpu, x_gpu] = pair({rows, cols}, DType::bf16, random_values(rows * cols, 21, 1.0, true, cols));
  for (auto [fwd, bwd, rot] : {std::tuple{QuantizerKind::four_over_six, QuantizerKind::ms_eden_g16, 128},
                               std::tuple{QuantizerKind::rtn, QuantizerKind::sr, 32},
                               std::tuple{QuantizerKind::mxfp4_quest, QuantizerKind::mxfp4_rtn, 32}}) {
    const Rotation r = Rotation::random(rot, {5, 6, 7});
    const QuantizerSpec f = QuantizerSpec::defaults(fwd), b = QuantizerSpec::defaults(bwd);
    const QTensor qc = cpu->quantize(x_cpu, false, f, Rotation::none(), {1, 1, 1});
    const QTensor qg = gpu->quantize(x_gpu, false, f, Rotation::none(), {1, 1, 1});
    expect_same_quantized(cpu->download_quantized(cpu->requantize_transposed(qc, b, r, {2, 2, 2})),
                          gpu->download_quantized(gpu->requantize_transposed(qg, b, r, {2, 2, 2})),
                          std::string("requant ") + std::string(quantizer_name(fwd)) + " -> " + std::string(quantizer_name(bwd)));
  }
  // The requant tile's E4M3 -> BF16 scale conversion over the E4M3 range: rows whose magnitudes
  // fall from 1 to 2^-24 give the 4/6 source block scales from the subnormals to 288; the test
  // first checks that they do.
  {
    std::vector<double> v = random_values(rows * cols, 25);
    for (std::int64_t i = 0; i < rows * cols; ++i) v[i] *= std::exp2(-24.0 * static_cast<double>(i / cols) / (rows - 1));
    auto [w_cpu, w_gpu] = pair({rows, cols}, DType::bf16, v);
    const QuantizerSpec f = QuantizerSpec::defaults(QuantizerKind::four_over_six);
    const QuantizerSpec b = QuantizerSpec::defaults(QuantizerKind::ms_eden_g16);
    const QTensor qc = cpu->quantize(w_cpu, false, f, Rotation::none(), {1, 1, 1});
    const QTensor qg = gpu->quantize(w_gpu, false, f, Rotation::none(), {1, 1, 1});
    const QuantizedTensor source = cpu->download_quantized(qc);
    const std::set<std::uint8_t> bytes(source.scales.begin(), source.scales.end());
    for (std::uint8_t subnormal = 1; subnormal < 8; ++subnormal) EXPECT_EQ(bytes.count(subnormal), 1u) << int{subnormal};
    EXPECT_GE(bytes.size(), 100u);
    const Rotation r = Rotation::random(128, {5, 6, 7});
    expect_same_quantized(cpu->download_quantized(cpu->requantize_transposed(qc, b, r, {2, 2, 2})),
                          gpu->download_quantized(gpu->requantize_transposed(qg, b, r, {2, 2, 2})),
                          "requant 4/6 -> MS-EDEN over the E4M3 scale range");
  }
  // QuEST on tiny and large inputs. Its scale 2^floor(log2(0.48708 sigma + 1e-8)) cannot go below
  // 2^-27, so tiny groups are all zero codes (requant then sees zeros); large ones (the largest
  // inputs whose row factors, up to 2^8, and unnormalised Hadamard sums, up to 32x, stay finite)
  // reach scales near 2^120.
  for (double scale : {3e-38, 1e-36, 1e33}) {
    auto [t_cpu, t_gpu] = pair({rows, cols}, DType::f32, random_values(rows * cols, 23, scale, true, cols));
    const QuantizerSpec f = QuantizerSpec::defaults(QuantizerKind::mxfp4_quest);
    const QuantizerSpec b = QuantizerSpec::defaults(QuantizerKind::mxfp4_rtn);
    const QTensor qc = cpu->quantize(t_cpu, false, f, Rotation::hadamard(32), {1, 1, 1});
    const QTensor qg = gpu->quantize(t_gpu, false, f, Rotation::hadamard(32), {1, 1, 1});
    const std::string what = "MXFP4 at scale " + std::to_string(scale);
    expect_same_quantized(cpu->download_quantized(qc), gpu->download_quantized(qg), what);
    expect_same_quantized(cpu->download_quantized(cpu->requantize_transposed(qc, b, Rotation::random(32, {5, 6, 7}), {2, 2, 2})),
                          gpu->download_quantized(gpu->requantize_transposed(qg, b, Rotation::random(32, {5, 6, 7}), {2, 2, 2})),
                          "requant " + what);
  }
  // The MXFP4 backward quantizer near both ends of the E8M0 range (its scale has no floor):
  // scale bytes 0..3 with subnormal inputs and products (2e-39, 1e-37), and bytes near 254 with
  // elements whose dequantized value (4 x 2^126 and up) overflows FP32 as on the CPU (1e35, rows
  // up to 2^8 larger). Row-wise
  // from f32 and bf16, transposed, and the requant of that tensor (an MXFP4 source tile with
  // such scales).
  for (double scale : {2e-39, 1e-37, 1e35}) {
    for (DType dtype : {DType::f32, DType::bf16}) {
      auto [t_cpu, t_gpu] = pair({rows, cols}, dtype, random_values(rows * cols, 24, scale, true, cols));
      for (QuantizerKind kind : {QuantizerKind::mxfp4_rtn, QuantizerKind::mxfp4_sr}) {
        const QuantizerSpec b = QuantizerSpec::defaults(kind);
        for (bool transpose : {false, true}) {
          const std::string what = std::string(quantizer_name(kind)) + (transpose ? " transposed " : " ") + dtype_name(dtype) +
                                   " at scale " + std::to_string(scale);
          const QTensor qc = cpu->quantize(t_cpu, transpose, b, Rotation::none(), {3, 1, 4});
          const QTensor qg = gpu->quantize(t_gpu, transpose, b, Rotation::none(), {3, 1, 4});
          expect_same_quantized(cpu->download_quantized(qc), gpu->download_quantized(qg), what);
          if (scale > 1.0) continue;  // a requant of overflowed (infinite) values has no finite input
          expect_same_quantized(cpu->download_quantized(cpu->requantize_transposed(qc, b, Rotation::random(32, {1, 6, 1}), {2, 7, 2})),
                                gpu->download_quantized(gpu->requantize_transposed(qg, b, Rotation::random(32, {1, 6, 1}), {2, 7, 2})),
                                "requant " + what);
        }
      }
    }
  }
  auto [w_cpu, w_gpu] = pair({40, 48}, DType::f32, random_values(40 * 48, 22));
  const QuantizerSpec sq = QuantizerSpec::defaults(QuantizerKind::square16);
  expect_same_quantized(
      cpu->download_quantized(cpu->transpose_square_blocks(cpu->quantize(w_cpu, false, sq, Rotation::none(), {}))),
      gpu->download_quantized(gpu->transpose_square_blocks(gpu->quantize(w_gpu, false, sq, Rotation::none(), {}))),
      "square transpose");
}

// Quartet I's backward step after each GEMM: the trust mask of a QuEST tensor, then D H / sqrt(n)
// per block, in place on a bf16 or f32 gradient. The same FP32 operations as the CPU, so the
// same bits: with the Hadamard-32 of the recipe, a random-sign RHT-32, no rotation, a width
// the fused kernel does not take (40: the one-thread-per-block kernel), and the grid capped
// at one block (the grid-stride loop).
TEST_F(Cuda, TrustMaskAndUnrotateAreBitwiseIdentical) {
  struct Case {
    std::int64_t rows, cols;
    Rotation rotation;
    const char* max_blocks;
  };
  const Case cases[] = {{64, 256, Rotation::hadamard(32), nullptr},      {40, 96, Rotation::random(32, {3, 1, 4}), nullptr},
                        {24, 80, Rotation::none(), nullptr},             {24, 40, Rotation::none(), nullptr},
                        {96, 128, Rotation::random(32, {2, 7, 1}), "1"},
                        // Ablations: RHT-16 and RHT-128 (QuEST through the reference kernels)
                        {32, 64, Rotation::random(16, {9, 2, 6}), nullptr},  {32, 256, Rotation::random(128, {5, 3, 5}), nullptr}};
  for (const Case& c : cases) {
    if (c.max_blocks) setenv("QUARTET_CUDA_MAX_BLOCKS", c.max_blocks, 1);
    const QuantizerSpec quest = QuantizerSpec::defaults(QuantizerKind::mxfp4_quest);
    auto [x_cpu, x_gpu] = pair({c.rows, c.cols}, DType::bf16, random_values(static_cast<std::size_t>(c.rows * c.cols), 51, 1.0, true, c.cols));
    const QTensor qc = cpu->quantize(x_cpu, false, quest, c.rotation, {1, 1, 1});
    const QTensor qg = gpu->quantize(x_gpu, false, quest, c.rotation, {1, 1, 1});
    for (DType dtype : {DType::bf16, DType::f32}) {
      auto [g_cpu, g_gpu] = pair({c.rows, c.cols}, dtype, random_values(static_cast<std::size_t>(c.rows * c.cols), 52, 1.0, true, c.cols));
      cpu->apply_trust_mask_and_unrotate(g_cpu, qc, c.rotation);
      gpu->apply_trust_mask_and_unrotate(g_gpu, qg, c.rotation);
      const std::vector<double> a = cpu->download(g_cpu), b = gpu->download(g_gpu);
      std::size_t differ = 0, zeros = 0;
      for (std::size_t i = 0; i < a.size(); ++i) {
        differ += a[i] != b[i];
        zeros += a[i] == 0.0;
      }
      const std::string what = std::to_string(c.rows) + "x" + std::to_string(c.cols) + " RHT-" + std::to_string(c.rotation.size) +
                               " " + dtype_name(dtype);
      EXPECT_EQ(differ, 0u) << what << ": elements differ";
      // Without a rotation the untrusted elements stay zero: the mask was applied at all.
      if (!c.rotation.size) {
        EXPECT_GT(zeros, 0u) << what;
      }
    }
    if (c.max_blocks) unsetenv("QUARTET_CUDA_MAX_BLOCKS");
  }
}

// The native Blackwell GEMM reads the codes tested above and the scales in the 128x4-tiled
// layout: those bytes too are the CPU's (padding rows and groups included). On this Hopper
// machine cuBLASLt has no FP4 GEMM, and the backend says it emulates.
TEST_F(Cuda, TiledScalesForTheNativeFp4GemmMatchTheCpu) {
  for (auto [rows, cols] : {std::pair{200, 264}, std::pair{128, 512}, std::pair{33, 48}}) {
    auto [x_cpu, x_gpu] = pair({rows, cols}, DType::bf16, random_values(static_cast<std::size_t>(rows * cols), 29, 1.0, true, cols));
    const QuantizerSpec spec = QuantizerSpec::defaults(QuantizerKind::four_over_six);
    const QuantizedTensor c = cpu->download_quantized(cpu->quantize(x_cpu, false, spec, Rotation::none(), {}), ScaleLayout::tiled);
    const QuantizedTensor g = gpu->download_quantized(gpu->quantize(x_gpu, false, spec, Rotation::none(), {}), ScaleLayout::tiled);
    EXPECT_EQ(g.scale_layout, ScaleLayout::tiled);
    EXPECT_EQ(c.scales.size(), static_cast<std::size_t>(((rows + 127) / 128 * 128) * (((cols + 15) / 16 + 3) / 4 * 4)));
    EXPECT_EQ(c.scales, g.scales) << rows << "x" << cols;
    EXPECT_EQ(c.codes, g.codes) << rows << "x" << cols;
  }
  int device = 0, major = 0;
  cudaGetDevice(&device);
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
  if (major == 9) {
    EXPECT_NE(gpu->name().find("NVFP4 GEMM: exact emulation"), std::string::npos) << gpu->name();
  }
  EXPECT_NE(gpu->name().find("NVFP4 GEMM: "), std::string::npos) << gpu->name();
}

TEST_F(Cuda, NonFiniteInputIsReportedLikeOnTheCpu) {
  std::vector<double> v = random_values(4 * 32, 3);
  v[2 * 32 + 7] = NAN;
  auto [x_cpu, x_gpu] = pair({4, 32}, DType::bf16, v);
  const QuantizerSpec spec = QuantizerSpec::defaults(QuantizerKind::rtn);
  std::string cpu_msg, gpu_msg;
  try {
    cpu->quantize(x_cpu, false, spec, Rotation::none(), {});
  } catch (const NonFiniteError& e) {
    cpu_msg = e.what();
  }
  // The GPU records it on the device; it surfaces at the next raise_pending_errors.
  try {
    gpu->quantize(x_gpu, false, spec, Rotation::none(), {});
    gpu->quantize(x_gpu, true, spec, Rotation::none(), {});  // a second offender: the first one is reported
    gpu->raise_pending_errors();
  } catch (const NonFiniteError& e) {
    gpu_msg = e.what();
  }
  EXPECT_NE(gpu_msg.find("(2, 7) of the 4 x 32 tensor"), std::string::npos) << gpu_msg;
  EXPECT_NE(cpu_msg.find("(2, 7) of the 4 x 32 tensor"), std::string::npos) << cpu_msg;
  EXPECT_NO_THROW(gpu->raise_pending_errors()) << "the record is cleared once reported";
}

// The rotated fused kernels test one rotated element per group and only then the unrotated
// ones (a non-finite input makes its whole rotation block non-finite): every kind of offender,
// at a position inside a block, through the row-wise and transposed kernels of each rotation
// size and both input types, must be reported at the CPU's position. A finite block whose
// rotated sums overflow passes that first test and must not be reported.
TEST_F(Cuda, NonFiniteInputUnderRotationIsReportedLikeOnTheCpu) {
  struct Case {
    QuantizerKind kind;
    int rotation;  // -32: the fixed Hadamard-32
    DType dtype;
    bool transpose;
  };
  const Case cases[] = {
      {QuantizerKind::ms_eden_g16, 128, DType::bf16, false}, {QuantizerKind::ms_eden_g16, 128, DType::bf16, true},
      {QuantizerKind::ms_eden_g16, 128, DType::f32, false},  {QuantizerKind::rtn, 16, DType::bf16, false},
      {QuantizerKind::rtn, 16, DType::bf16, true},           {QuantizerKind::sr, 32, DType::f32, false},
      {QuantizerKind::mxfp4_quest, -32, DType::bf16, false}, {QuantizerKind::mxfp4_quest, -32, DType::bf16, true},
      {QuantizerKind::mxfp4_rtn, 32, DType::f32, false},     {QuantizerKind::rtn, 16, DType::f32, false},
      {QuantizerKind::mxfp4_rtn, 32, DType::bf16, true},
  };
  const double offenders[][2] = {{NAN, 1.0}, {INFINITY, 1.0}, {-INFINITY, 1.0}, {INFINITY, -INFINITY}};
  const std::int64_t rows = 256, cols = 256;  // both a multiple of 128: the transposed kernels reduce over rows
  // Once with the full grid, once with one block (QUARTET_CUDA_MAX_BLOCKS), so that the offender
  // is met in a later grid-stride iteration, after the prefetch of the next group or tile.
  for (const char* max_blocks : {static_cast<const char*>(nullptr), "1"}) {
    if (max_blocks) setenv("QUARTET_CUDA_MAX_BLOCKS", max_blocks, 1);
    for (const Case& c : cases) {
      const QuantizerSpec spec = QuantizerSpec::defaults(c.kind);
      const Rotation rot = c.rotation < 0 ? Rotation::hadamard(-c.rotation) : Rotation::random(c.rotation, {2, 3, 4});
      for (const auto& bad : offenders) {
        const std::string what = std::string(max_blocks ? "one block: " : "") + std::string(quantizer_name(c.kind)) +
                                 " rotation " + std::to_string(c.rotation) + (c.dtype == DType::bf16 ? " bf16" : " f32") +
                                 (c.transpose ? " transposed" : " row-wise") + " offender " + std::to_string(bad[0]) +
                                 "/" + std::to_string(bad[1]);
        std::vector<double> v = random_values(static_cast<std::size_t>(rows * cols), 61);
        // Element 6 of 16-group 9 (lane 1 of an RHT-128 block); the pair's second offender in the
        // same 16-group, hence the same block for every rotation size.
        v[static_cast<std::size_t>(37 * cols + 150)] = bad[0];
        if (bad[1] != 1.0) v[static_cast<std::size_t>(37 * cols + 146)] = bad[1];
        auto [x_cpu, x_gpu] = pair({rows, cols}, c.dtype, v);
        std::string cpu_msg, gpu_msg;
        try {
          cpu->quantize(x_cpu, c.transpose, spec, rot, {1, 1, 1});
        } catch (const NonFiniteError& e) {
          cpu_msg = e.what();
        }
        try {
          gpu->quantize(x_gpu, c.transpose, spec, rot, {1, 1, 1});
          gpu->raise_pending_errors();
        } catch (const NonFiniteError& e) {
          gpu_msg = e.what();
        }
        // The position, as the CPU names it (the GPU's message says "not finite" for any kind).
        const auto position = [](const std::string& m) { return m.substr(0, m.find(" is ")); };
        EXPECT_NE(cpu_msg.find("element ("), std::string::npos) << what << ": " << cpu_msg;
        EXPECT_EQ(position(gpu_msg), position(cpu_msg)) << what;
      }
      // Finite, but |x| near the BF16 / FP32 maximum: the rotated sums overflow to infinity. A
      // 16-group along a row and one down a column, so that both directions meet one.
      std::vector<double> v = random_values(static_cast<std::size_t>(rows * cols), 62);
      for (int i = 0; i < 16; ++i) {
        v[static_cast<std::size_t>(5 * cols + 16 + i)] = 3.0e38;
        v[static_cast<std::size_t>((48 + i) * cols + 5)] = 3.0e38;
      }
      auto [x_cpu, x_gpu] = pair({rows, cols}, c.dtype, v);
      bool cpu_threw = false, gpu_threw = false;
      try {
        cpu->quantize(x_cpu, c.transpose, spec, rot, {1, 1, 1});
      } catch (const NonFiniteError&) {
        cpu_threw = true;
      } catch (const Error&) {
        // another complaint (an overflowing scale) is the quantizer's business, not this test's
      }
      try {
        gpu->quantize(x_gpu, c.transpose, spec, rot, {1, 1, 1});
        gpu->raise_pending_errors();
      } catch (const NonFiniteError&) {
        gpu_threw = true;
      } catch (const Error&) {
      }
      EXPECT_FALSE(cpu_threw) << quantizer_name(c.kind);
      EXPECT_FALSE(gpu_threw) << quantizer_name(c.kind) << ": a finite input reported as non-finite";
    }
    if (max_blocks) unsetenv("QUARTET_CUDA_MAX_BLOCKS");
  }
}

// ---- quantize_both_ways: E and E^T from one read of dY ----

// The BF16 copies two quantizations wrote for the emulated GEMM (DeviceQuantized::dequantized):
// both or neither, with the same bits.
void expect_same_gemm_copy(const cuda::DeviceQuantized& a, const cuda::DeviceQuantized& b, const std::string& what) {
  ASSERT_EQ(a.dequantized != nullptr, b.dequantized != nullptr) << what << ": only one wrote a BF16 copy";
  if (!a.dequantized) return;
  ASSERT_EQ(a.rows * a.padded_cols, b.rows * b.padded_cols) << what;
  const std::size_t n = static_cast<std::size_t>(a.rows * a.padded_cols);
  std::vector<std::uint16_t> va(n), vb(n);
  ASSERT_EQ(cudaMemcpy(va.data(), a.dequantized.get(), n * 2, cudaMemcpyDeviceToHost), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(vb.data(), b.dequantized.get(), n * 2, cudaMemcpyDeviceToHost), cudaSuccess);
  std::size_t differ = 0;
  for (std::size_t i = 0; i < n; ++i) differ += va[i] != vb[i];
  EXPECT_EQ(differ, 0u) << what << ": BF16 copies differ";
}

struct BothWaysCase {
  std::int64_t rows, cols;  // x's
  int row_rotation, col_rotation;
  DType dtype;
  QuantizerKind row_kind, col_kind;
  bool fused;  // whether one kernel reads x for both (cuda::fuses_both_ways)
};

constexpr QuantizerKind kEden = QuantizerKind::ms_eden_g16;

// quantize_both_ways reads a BF16 x once for its MS-EDEN g16 quantizations row-wise and
// transposed (fused_both_ways_kernel) and is the two quantize calls otherwise. Either way its two
// results are the two calls' bit for bit (codes, scales, tensor scales, the BF16 copies for the
// emulated GEMM) and the CPU's. The kernel's cases: the smallest input of each rotation size,
// non-square inputs, sides that are not multiples of its 128 x 128 block (without rotation or
// with RHT-16/32: partial blocks both ways, a padded transposed reduction), the same rotation signs
// both ways (as quartet2's) and unrelated ones. The fallbacks: FP32, a width of odd 8-groups,
// unequal rotation sizes, other quantizers (nvidia's pair). Once more with the grid capped at two
// blocks, so that each block takes several 128 x 128 blocks (the prefetch, the barriers).
TEST_F(Cuda, QuantizeBothWaysIsTheTwoQuantizeCallsBitForBit) {
  const testing::ScopedEnv one_pass("QUARTET_QUANTIZE_BOTH_WAYS", "fused");  // the one-pass kernel is opt-in
  const BothWaysCase cases[] = {
      {128, 128, 128, 128, DType::bf16, kEden, kEden, true},
      {256, 384, 128, 128, DType::bf16, kEden, kEden, true},
      {640, 256, 128, 128, DType::bf16, kEden, kEden, true},
      {1, 16, 0, 0, DType::bf16, kEden, kEden, true},
      {200, 272, 0, 0, DType::bf16, kEden, kEden, true},
      {37, 80, 0, 0, DType::bf16, kEden, kEden, true},
      {48, 272, 16, 16, DType::bf16, kEden, kEden, true},
      {96, 160, 32, 32, DType::bf16, kEden, kEden, true},
      {256, 384, 128, 128, DType::f32, kEden, kEden, false},
      {128, 200, 0, 0, DType::bf16, kEden, kEden, false},
      {256, 384, 128, 16, DType::bf16, kEden, kEden, false},
      {256, 384, 128, 128, DType::bf16, QuantizerKind::sr, QuantizerKind::sr, false},
      {256, 384, 0, 16, DType::bf16, QuantizerKind::sr, QuantizerKind::sr, false},
  };
  for (const char* max_blocks : {static_cast<const char*>(nullptr), "2"}) {
    if (max_blocks) setenv("QUARTET_CUDA_MAX_BLOCKS", max_blocks, 1);
    for (const BothWaysCase& c : cases) {
      for (bool same_signs : {true, false}) {
        if (!same_signs && c.row_rotation == 0 && c.col_rotation == 0) continue;
        const std::string what = std::string(max_blocks ? "two blocks: " : "") + std::string(quantizer_name(c.row_kind)) +
                                 " RHT-" + std::to_string(c.row_rotation) + " / " + std::string(quantizer_name(c.col_kind)) + " RHT-" +
                                 std::to_string(c.col_rotation) + (same_signs ? " (same signs) " : " ") +
                                 dtype_name(c.dtype) + " " + std::to_string(c.rows) + "x" + std::to_string(c.cols);
        const auto rotation = [&](int size, std::uint64_t seed) {
          return size ? Rotation::random(size, {seed, 1, 2}) : Rotation::none();
        };
        const Rotation row_rot = rotation(c.row_rotation, 3), col_rot = rotation(c.col_rotation, same_signs ? 3 : 4);
        const QuantizerSpec row_spec = QuantizerSpec::defaults(c.row_kind), col_spec = QuantizerSpec::defaults(c.col_kind);
        const RandomContext row_rng{11, 2, 13}, col_rng{11, 4, 13};  // as a linear layer's E and E^T streams
        ASSERT_EQ(cuda::fuses_both_ways(c.dtype, c.rows, c.cols, row_spec, row_rot, col_spec, col_rot), c.fused) << what;
        auto [x_cpu, x_gpu] = pair({c.rows, c.cols}, c.dtype,
                                   random_values(static_cast<std::size_t>(c.rows * c.cols), 91, 1.0, true, c.cols));
        const auto [row_g, col_g] = gpu->quantize_both_ways(x_gpu, row_spec, row_rot, row_rng, col_spec, col_rot, col_rng);
        const QTensor row_s = gpu->quantize(x_gpu, false, row_spec, row_rot, row_rng);
        const QTensor col_s = gpu->quantize(x_gpu, true, col_spec, col_rot, col_rng);
        const auto [row_c, col_c] = cpu->quantize_both_ways(x_cpu, row_spec, row_rot, row_rng, col_spec, col_rot, col_rng);
        gpu->raise_pending_errors();
        const QuantizedTensor row = gpu->download_quantized(row_g), col = gpu->download_quantized(col_g);
        ASSERT_EQ(row.rows, c.rows) << what;
        ASSERT_EQ(col.rows, c.cols) << what;
        expect_same_quantized(gpu->download_quantized(row_s), row, what + ", row-wise: against quantize");
        expect_same_quantized(gpu->download_quantized(col_s), col, what + ", transposed: against quantize");
        expect_same_quantized(cpu->download_quantized(row_c), row, what + ", row-wise: against the CPU");
        expect_same_quantized(cpu->download_quantized(col_c), col, what + ", transposed: against the CPU");
        // The BF16 copies an emulated GEMM reads, whatever this GPU's GEMM is.
        const auto [row_d, col_d] = cuda::quantize_both_ways(x_gpu.raw(), c.dtype, c.rows, c.cols, row_spec, row_rot, row_rng,
                                                             col_spec, col_rot, col_rng, nullptr, true);
        const cuda::DeviceQuantized row_e =
            cuda::quantize(x_gpu.raw(), c.dtype, c.rows, c.cols, false, row_spec, row_rot, row_rng, nullptr, true);
        const cuda::DeviceQuantized col_e =
            cuda::quantize(x_gpu.raw(), c.dtype, c.rows, c.cols, true, col_spec, col_rot, col_rng, nullptr, true);
        cuda::raise_pending_errors();
        expect_same_gemm_copy(row_e, row_d, what + ", row-wise");
        expect_same_gemm_copy(col_e, col_d, what + ", transposed");
      }
    }
    if (max_blocks) unsetenv("QUARTET_CUDA_MAX_BLOCKS");
  }
  // A rotation that a side does not fit: the calls' error, on both backends.
  const QuantizerSpec eden = QuantizerSpec::defaults(kEden);
  const Rotation rot = Rotation::random(128, {5, 5, 5});
  auto [x_cpu, x_gpu] = pair({64, 256}, DType::bf16, random_values(64 * 256, 92));
  EXPECT_FALSE(cuda::fuses_both_ways(DType::bf16, 64, 256, eden, rot, eden, rot));
  EXPECT_THROW(gpu->quantize_both_ways(x_gpu, eden, rot, {}, eden, rot, {}), Error);
  EXPECT_THROW(cpu->quantize_both_ways(x_cpu, eden, rot, {}, eden, rot, {}), Error);
  gpu->raise_pending_errors();
}

// quantize_both_ways is the two calls by default and the one-pass kernel with
// QUARTET_QUANTIZE_BOTH_WAYS=fused (timed against each other by gpu-session.sh's onepass mode);
// the bits are the same; another value is an error naming it.
TEST_F(Cuda, QuantizeBothWaysSwitchKeepsTheBits) {
  struct Unset {
    ~Unset() { unsetenv("QUARTET_QUANTIZE_BOTH_WAYS"); }
  } unset_at_exit;
  const QuantizerSpec eden = QuantizerSpec::defaults(QuantizerKind::ms_eden_g16);
  const Rotation rot = Rotation::random(128, {5, 6, 7});
  auto [x_cpu, x_gpu] = pair({256, 384}, DType::bf16, random_values(256 * 384, 17));
  EXPECT_FALSE(cuda::fuses_both_ways(DType::bf16, 256, 384, eden, rot, eden, rot));
  const auto [row_s, col_s] = gpu->quantize_both_ways(x_gpu, eden, rot, {1, 1, 1}, eden, rot, {1, 2, 1});
  setenv("QUARTET_QUANTIZE_BOTH_WAYS", "fused", 1);
  ASSERT_TRUE(cuda::fuses_both_ways(DType::bf16, 256, 384, eden, rot, eden, rot));
  const auto [row_f, col_f] = gpu->quantize_both_ways(x_gpu, eden, rot, {1, 1, 1}, eden, rot, {1, 2, 1});
  setenv("QUARTET_QUANTIZE_BOTH_WAYS", "both", 1);
  std::string message;
  try {
    gpu->quantize_both_ways(x_gpu, eden, rot, {1, 1, 1}, eden, rot, {1, 2, 1});
  } catch (const Error& e) {
    message = e.what();
  }
  EXPECT_NE(message.find("QUARTET_QUANTIZE_BOTH_WAYS must be \"separate\" or \"fused\", got \"both\""),
            std::string::npos)
      << message;
  expect_same_quantized(gpu->download_quantized(row_f), gpu->download_quantized(row_s), "row-wise");
  expect_same_quantized(gpu->download_quantized(col_f), gpu->download_quantized(col_s), "transposed");
}


// A non-finite element of x is reported by quantize_both_ways as by the two quantize calls: the
// row-wise call's first offender (it is the first call), in x's coordinates, whichever of the
// fused kernel's 128 x 128 blocks and grid-stride iterations holds it, for every kind of
// offender; with two offenders, the transposed pass's first one is another element, which must
// not win. A finite input whose rotated sums overflow is reported by neither.
TEST_F(Cuda, QuantizeBothWaysReportsNonFiniteInputLikeTheTwoCalls) {
  const testing::ScopedEnv one_pass("QUARTET_QUANTIZE_BOTH_WAYS", "fused");  // the one-pass kernel is opt-in
  struct Case {
    std::int64_t rows, cols;
    int rotation;
    DType dtype;
  };
  const Case cases[] = {{256, 384, 128, DType::bf16}, {200, 272, 0, DType::bf16}, {256, 384, 128, DType::f32}};
  const double offenders[] = {NAN, INFINITY, -INFINITY};
  // (row, column) pairs: one offender in the first block, one in a later block, and two whose
  // first in x^T's order (the lower column) is not the first in x's.
  const std::vector<std::vector<std::pair<std::int64_t, std::int64_t>>> positions = {
      {{37, 150}}, {{190, 260}}, {{5, 200}, {100, 3}}};
  const QuantizerSpec eden = QuantizerSpec::defaults(kEden);
  const auto position = [](const std::string& m) { return m.substr(0, m.find(" is ")); };
  for (const char* max_blocks : {static_cast<const char*>(nullptr), "1"}) {
    if (max_blocks) setenv("QUARTET_CUDA_MAX_BLOCKS", max_blocks, 1);
    for (const Case& c : cases) {
      const Rotation rot = c.rotation ? Rotation::random(c.rotation, {2, 3, 4}) : Rotation::none();
      ASSERT_EQ(cuda::fuses_both_ways(c.dtype, c.rows, c.cols, eden, rot, eden, rot), c.dtype == DType::bf16);
      for (double bad : offenders) {
        for (const auto& at : positions) {
          std::string what = std::string(max_blocks ? "one block: " : "") + "RHT-" + std::to_string(c.rotation) + " " +
                             dtype_name(c.dtype) + " " + std::to_string(c.rows) + "x" + std::to_string(c.cols) +
                             " offender " + std::to_string(bad) + " at";
          std::vector<double> v = random_values(static_cast<std::size_t>(c.rows * c.cols), 63);
          for (auto [r, col] : at) {
            v[static_cast<std::size_t>(r * c.cols + col)] = bad;
            what += " (" + std::to_string(r) + ", " + std::to_string(col) + ")";
          }
          auto [x_cpu, x_gpu] = pair({c.rows, c.cols}, c.dtype, v);
          std::string cpu_msg, fused_msg, calls_msg;
          try {
            cpu->quantize_both_ways(x_cpu, eden, rot, {1, 1, 1}, eden, rot, {1, 2, 1});
          } catch (const NonFiniteError& e) {
            cpu_msg = e.what();
          }
          try {
            gpu->quantize_both_ways(x_gpu, eden, rot, {1, 1, 1}, eden, rot, {1, 2, 1});
            gpu->raise_pending_errors();
          } catch (const NonFiniteError& e) {
            fused_msg = e.what();
          }
          try {
            gpu->quantize(x_gpu, false, eden, rot, {1, 1, 1});
            gpu->quantize(x_gpu, true, eden, rot, {1, 2, 1});
            gpu->raise_pending_errors();
          } catch (const NonFiniteError& e) {
            calls_msg = e.what();
          }
          const std::string expected = "element (" + std::to_string(at[0].first) + ", " + std::to_string(at[0].second) +
                                       ") of the " + std::to_string(c.rows) + " x " + std::to_string(c.cols) + " tensor";
          EXPECT_NE(cpu_msg.find(expected), std::string::npos) << what << ": " << cpu_msg;
          EXPECT_NE(fused_msg.find(expected), std::string::npos) << what << ": " << fused_msg;
          EXPECT_EQ(fused_msg, calls_msg) << what;
          EXPECT_EQ(position(fused_msg), position(cpu_msg)) << what;
          EXPECT_NO_THROW(gpu->raise_pending_errors()) << what << ": the record is cleared once reported";
        }
      }
      // Finite, but |x| near the BF16 / FP32 maximum: rotated sums overflow, along a row and
      // down a column.
      std::vector<double> v = random_values(static_cast<std::size_t>(c.rows * c.cols), 64);
      for (int i = 0; i < 16; ++i) {
        v[static_cast<std::size_t>(5 * c.cols + 16 + i)] = 3.0e38;
        v[static_cast<std::size_t>((48 + i) * c.cols + 5)] = 3.0e38;
      }
      auto [x_cpu, x_gpu] = pair({c.rows, c.cols}, c.dtype, v);
      bool threw = false;
      try {
        gpu->quantize_both_ways(x_gpu, eden, rot, {1, 1, 1}, eden, rot, {1, 2, 1});
        gpu->raise_pending_errors();
      } catch (const NonFiniteError&) {
        threw = true;
      } catch (const Error&) {
      }
      EXPECT_FALSE(threw) << "RHT-" << c.rotation << " " << c.rows << "x" << c.cols << ": a finite input reported as non-finite";
    }
    if (max_blocks) unsetenv("QUARTET_CUDA_MAX_BLOCKS");
  }
}

// |gpu - cpu| <= 2 K 2^-24 sum|a b| + (bf16 ? 2^-8 |cpu| : 0), per element.
void expect_gemm_close(const std::vector<double>& g, const std::vector<double>& c, const std::vector<double>& bound,
                       bool bf16, const std::string& what) {
  ASSERT_EQ(g.size(), c.size());
  int bad = 0;
  for (std::size_t i = 0; i < g.size(); ++i) {
    const double tol = bound[i] + (bf16 ? std::ldexp(std::fabs(c[i]), -8) : 0.0) + 1e-30;
    if (std::fabs(g[i] - c[i]) > tol && ++bad <= 3) {
      ADD_FAILURE() << what << "[" << i << "]: gpu " << g[i] << " cpu " << c[i] << " tolerance " << tol;
    }
  }
  EXPECT_EQ(bad, 0) << what;
}

// Both operands quantized with `s` on each backend, then the quantized GEMM: the quantized
// values are identical, so the outputs differ only by the FP32 accumulation order.
void expect_quantized_gemm_matches(Backend& cpu, Backend& gpu, const Tensor& a_cpu, const Tensor& a_gpu, const Tensor& b_cpu,
                                   const Tensor& b_gpu, const QuantizerSpec& s, const std::string& what) {
  const std::int64_t m = a_cpu.dim(0), n = b_cpu.dim(0), k = a_cpu.dim(1);
  const QTensor qa = cpu.quantize(a_cpu, false, s, Rotation::none(), {}), qb = cpu.quantize(b_cpu, false, s, Rotation::none(), {});
  Tensor oc = cpu.empty({m, n}, DType::f32), og = gpu.empty({m, n}, DType::f32);
  cpu.gemm_quantized(oc, qa, qb, false);
  gpu.gemm_quantized(og, gpu.quantize(a_gpu, false, s, Rotation::none(), {}), gpu.quantize(b_gpu, false, s, Rotation::none(), {}), false);
  const QuantizedTensor ha = cpu.download_quantized(qa), hb = cpu.download_quantized(qb);
  std::vector<double> bound(static_cast<std::size_t>(m * n));
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < n; ++j) {
      double s_abs = 0;
      for (std::int64_t l = 0; l < k; ++l) s_abs += std::fabs(static_cast<double>(ha.value(i, l)) * hb.value(j, l));
      bound[static_cast<std::size_t>(i * n + j)] = 2.0 * static_cast<double>(k) * std::ldexp(s_abs, -24);
    }
  expect_gemm_close(gpu.download(og), cpu.download(oc), bound, false, what);
}

TEST_F(Cuda, QuantizedGemmMatchesTheCpu) {
  const std::int64_t m = 64, n = 48, k = 256;
  for (QuantizerKind kind : {QuantizerKind::rtn, QuantizerKind::four_over_six, QuantizerKind::mxfp4_rtn}) {
    auto [a_cpu, a_gpu] = pair({m, k}, DType::bf16, random_values(m * k, 31));
    auto [b_cpu, b_gpu] = pair({n, k}, DType::f32, random_values(n * k, 32));
    expect_quantized_gemm_matches(*cpu, *gpu, a_cpu, a_gpu, b_cpu, b_gpu, QuantizerSpec::defaults(kind),
                                  std::string(quantizer_name(kind)));
  }
}

// The BF16 copy a fused quantizer writes for the emulated GEMM (DeviceQuantized::dequantized)
// is the dequantization pass's output bit for bit, the signs of zeros included (a GEMM cannot
// tell -0 from +0): every kind that writes one, row-wise and transposed, without and with its
// rotation, and a tiny tensor, which rtn, 4/6 and SR write through their zero-group branch.
TEST_F(Cuda, FusedBf16CopyIsTheDequantizationPassBitForBit) {
  const std::int64_t rows = 256, cols = 256;
  for (QuantizerKind kind : {QuantizerKind::rtn, QuantizerKind::four_over_six, QuantizerKind::sr, QuantizerKind::ms_eden_g16,
                            QuantizerKind::mxfp4_quest, QuantizerKind::mxfp4_rtn, QuantizerKind::mxfp4_sr}) {
    const bool mx = quantizer_format(kind) == ElementFormat::mxfp4;
    for (bool transpose : {false, true}) {
      for (bool rotated : {false, true}) {
        for (double scale : {1.0, 1e-31}) {  // no row factors: 1e-31 stays below the tiny-amax threshold
          const std::string what = std::string(quantizer_name(kind)) + (transpose ? " transposed" : "") +
                                   (rotated ? " rotated" : "") + (scale != 1.0 ? " tiny" : "");
          auto [x_cpu, x_gpu] = pair({rows, cols}, DType::bf16, random_values(rows * cols, 51, scale));
          const Rotation rot = rotated ? Rotation::random(mx ? 32 : 128, {5, 6, 7}) : Rotation::none();
          const cuda::DeviceQuantized q = cuda::quantize(x_gpu.raw(), DType::bf16, rows, cols, transpose,
                                                         QuantizerSpec::defaults(kind), rot, {1, 2, 3}, nullptr, true);
          cuda::raise_pending_errors();
          ASSERT_TRUE(q.dequantized) << what << ": no BF16 copy written";
          const std::size_t n = static_cast<std::size_t>(q.rows * q.padded_cols);
          std::vector<std::uint16_t> fused(n), pass(n);
          const std::shared_ptr<void> out = cuda::device_alloc(n * sizeof(std::uint16_t));
          cuda::dequantize_block_scaled_bf16(q, out.get(), nullptr);
          ASSERT_EQ(cudaMemcpy(fused.data(), q.dequantized.get(), n * 2, cudaMemcpyDeviceToHost), cudaSuccess);
          ASSERT_EQ(cudaMemcpy(pass.data(), out.get(), n * 2, cudaMemcpyDeviceToHost), cudaSuccess);
          std::size_t differ = 0, first = n;
          for (std::size_t i = 0; i < n; ++i) {
            if (fused[i] != pass[i] && differ++ == 0) first = i;
          }
          EXPECT_EQ(differ, 0u) << what << ": BF16 copy differs from the dequantization pass, first at element " << first;
        }
      }
    }
  }
}

// On Hopper the fused quantizers write their operands in BF16 for the emulated GEMM, which then
// skips its dequantization pass (rtn, 4/6, sr and MXFP4 in their pass, MS-EDEN g16 in its scale
// pass). That copy must exist where promised (no dequantization pass runs for the first GEMM)
// and be the dequantization pass's output bit for bit: the GEMM (one cuBLASLt algorithm per
// shape, so deterministic) gives the same bits with it as on a backend without it, and again
// once the copy is used up (the second GEMM dequantizes both operands). Row-wise from bf16 and
// f32, transposed, padded reductions, a tiny (all-zero) operand b (a keeps row factors that lift
// it above the threshold; the copy of a tiny tensor is checked bit for bit above), rotated MS-EDEN, MS-EDEN's
// scale pass over several chunks per block, and requant.
TEST_F(Cuda, FusedDequantizedOperandsGiveTheGemmOfTheDequantizationPass) {
  auto plain = make_cuda_backend(CudaBackendOptions{.fused_dequantize = false});
  const bool emulated = gpu->name().find("emulation") != std::string::npos;
  // make(backend, a, b) quantizes the two operands on `backend` (inputs uploaded to it).
  using Make = std::function<std::pair<QTensor, QTensor>(Backend&, const Tensor&, const Tensor&)>;
  // scale_b (0: scale) lets one operand sit at the bottom of the E8M0 range while the products
  // stay normal FP32 numbers, so that the GEMM sees every bit of the tiny operand's copy.
  const auto check = [&](const Shape& sa, const Shape& sb, DType dtype, std::int64_t m, std::int64_t n, double scale,
                         bool expect_copy, const Make& make, const std::string& what, double scale_b = 0.0) {
    const std::vector<double> va = random_values(static_cast<std::size_t>(shape_numel(sa)), 41, scale, true, sa[1]);
    const std::vector<double> vb = random_values(static_cast<std::size_t>(shape_numel(sb)), 42, scale_b > 0 ? scale_b : scale);
    Tensor a = gpu->empty(sa, dtype), b = gpu->empty(sb, dtype), a2 = plain->empty(sa, dtype), b2 = plain->empty(sb, dtype);
    gpu->upload(a, va), gpu->upload(b, vb), plain->upload(a2, va), plain->upload(b2, vb);
    const auto [qa, qb] = make(*gpu, a, b);
    const auto [ra, rb] = make(*plain, a2, b2);
    Tensor fused = gpu->empty({m, n}, DType::f32), again = gpu->empty({m, n}, DType::f32), reference = plain->empty({m, n}, DType::f32);
    const std::uint64_t before = cuda::dequantization_passes();
    gpu->gemm_quantized(fused, qa, qb, false);
    const std::uint64_t first = cuda::dequantization_passes() - before;
    gpu->gemm_quantized(again, qa, qb, false);
    const std::uint64_t second = cuda::dequantization_passes() - before - first;
    plain->gemm_quantized(reference, ra, rb, false);
    if (emulated) {
      EXPECT_EQ(first, expect_copy ? 0u : 2u) << what << ": dequantization passes of the first GEMM";
      EXPECT_EQ(second, 2u) << what << ": dequantization passes of the second GEMM";
    }
    const std::vector<double> f = gpu->download(fused), g = gpu->download(again), r = plain->download(reference);
    std::size_t differ = 0, differ_again = 0;
    for (std::size_t i = 0; i < r.size(); ++i) {
      differ += f[i] != r[i];
      differ_again += g[i] != r[i];
    }
    EXPECT_EQ(differ, 0u) << what << ": GEMM outputs from the fused BF16 operands differ";
    EXPECT_EQ(differ_again, 0u) << what << ": GEMM outputs after the BF16 operands were used up differ";
  };
  const std::int64_t m = 96, n = 80;
  for (QuantizerKind kind : {QuantizerKind::rtn, QuantizerKind::four_over_six, QuantizerKind::sr, QuantizerKind::ms_eden_g16,
                            QuantizerKind::mxfp4_quest, QuantizerKind::mxfp4_rtn, QuantizerKind::mxfp4_sr}) {
    for (bool transpose : {false, true}) {
      for (DType dtype : {DType::bf16, DType::f32}) {
        for (std::int64_t k : {std::int64_t{256}, std::int64_t{192}, std::int64_t{200}}) {
          const bool eden = kind == QuantizerKind::ms_eden_g16;
          const bool mx = quantizer_format(kind) == ElementFormat::mxfp4;
          Rotation rot = eden && k % 128 == 0 ? Rotation::random(128, {5, 6, 7}) : Rotation::none();
          if (mx && k % 32 == 0) rot = Rotation::random(32, {5, 6, 7});
          const QuantizerSpec spec = QuantizerSpec::defaults(kind);
          // The fused kernels: row-wise with a reduction of whole groups, transposed from bf16;
          // MS-EDEN's fused scale pass needs whole Philox blocks (groups % 8 == 0).
          const std::int64_t group = mx ? 32 : 16, groups = (k + 15) / 16;
          const bool copy = (transpose ? dtype == DType::bf16 : k % group == 0) && (!eden || groups % 8 == 0);
          for (double scale : {1.0, 1e-31}) {
            if (scale != 1.0 && (dtype != DType::bf16 || k != 256)) continue;  // tiny: row-wise and tile kernels
            check(transpose ? Shape{k, m} : Shape{m, k}, transpose ? Shape{k, n} : Shape{n, k}, dtype, m, n, scale, copy,
                  [&](Backend& be, const Tensor& a, const Tensor& b) {
                    return std::pair{be.quantize(a, transpose, spec, rot, {1, 2, 3}), be.quantize(b, transpose, spec, rot, {1, 2, 4})};
                  },
                  std::string(quantizer_name(kind)) + (transpose ? " transposed " : " ") + dtype_name(dtype) +
                      " K=" + std::to_string(k) + (scale != 1.0 ? " tiny" : ""));
          }
        }
      }
    }
  }
  // MS-EDEN's scale pass with the grid capped at one block: 192 x 16 groups are two chunks of
  // 2,048, so the block reuses its shared scales behind the barrier.
  setenv("QUARTET_CUDA_MAX_BLOCKS", "1", 1);
  check({192, 256}, {80, 256}, DType::bf16, 192, 80, 1.0, true,
        [&](Backend& be, const Tensor& a, const Tensor& b) {
          const QuantizerSpec spec = QuantizerSpec::defaults(QuantizerKind::ms_eden_g16);
          const Rotation rot = Rotation::random(128, {6, 6, 6});
          return std::pair{be.quantize(a, false, spec, rot, {4, 4, 4}), be.quantize(b, false, spec, rot, {4, 4, 5})};
        },
        "ms_eden_g16, one block, two chunks");
  unsetenv("QUARTET_CUDA_MAX_BLOCKS");
  // The recipes' backward operands from their forward tensors: quartet2 (4/6 -> RHT-128 +
  // MS-EDEN), quartet1 (QuEST after the fixed Hadamard-32 -> RHT-32 + MXFP4 RTN), tetrajet2
  // (RTN -> RHT-32 + SR).
  struct RequantCase {
    QuantizerKind fwd;
    Rotation fwd_rotation;
    QuantizerKind bwd;
    Rotation rotation;
    const char* what;
  };
  const RequantCase requants[] = {
      {QuantizerKind::four_over_six, Rotation::none(), QuantizerKind::ms_eden_g16, Rotation::random(128, {8, 8, 8}),
       "requant 4/6 -> MS-EDEN RHT-128"},
      {QuantizerKind::mxfp4_quest, Rotation::hadamard(32), QuantizerKind::mxfp4_rtn, Rotation::random(32, {8, 8, 8}),
       "requant QuEST -> MXFP4 RTN RHT-32"},
      {QuantizerKind::rtn, Rotation::none(), QuantizerKind::sr, Rotation::random(32, {9, 9, 9}), "requant RTN -> SR RHT-32"},
  };
  const std::int64_t tokens = 256, k1 = 128, k2 = 192;
  for (const RequantCase& rq : requants) {
    check({tokens, k1}, {tokens, k2}, DType::bf16, k1, k2, 1.0, true,
          [&](Backend& be, const Tensor& a, const Tensor& b) {
            const QuantizerSpec fwd = QuantizerSpec::defaults(rq.fwd), bwd = QuantizerSpec::defaults(rq.bwd);
            const QTensor fa = be.quantize(a, false, fwd, rq.fwd_rotation, {}), fb = be.quantize(b, false, fwd, rq.fwd_rotation, {});
            return std::pair{be.requantize_transposed(fa, bwd, rq.rotation, {2, 2, 2}),
                             be.requantize_transposed(fb, bwd, rq.rotation, {2, 2, 3})};
          },
          rq.what);
  }
  // The MXFP4 backward quantizer (scale 2^floor(log2 amax), no floor) at the bottom of the E8M0
  // range: scale bytes 0 and 1, e2m1 x 2^-127 products that are BF16 subnormals in the copy.
  for (QuantizerKind kind : {QuantizerKind::mxfp4_rtn, QuantizerKind::mxfp4_sr}) {
    for (bool transpose : {false, true}) {
      check(transpose ? Shape{256, m} : Shape{m, 256}, transpose ? Shape{256, n} : Shape{n, 256}, DType::bf16, m, n, 2e-39, true,
            [&](Backend& be, const Tensor& a, const Tensor& b) {
              const QuantizerSpec spec = QuantizerSpec::defaults(kind);
              return std::pair{be.quantize(a, transpose, spec, Rotation::none(), {1, 2, 3}),
                               be.quantize(b, transpose, spec, Rotation::none(), {1, 2, 4})};
            },
            std::string(quantizer_name(kind)) + (transpose ? " transposed" : "") + " at 2e-39", 1e30);
    }
  }
}

TEST_F(Cuda, HighPrecisionGemmEveryTransposition) {
  const std::int64_t m = 33, n = 20, k = 64;
  for (bool at : {false, true})
    for (bool bt : {false, true})
      for (bool acc : {false, true}) {
        auto [a_cpu, a_gpu] = pair(at ? Shape{k, m} : Shape{m, k}, DType::bf16, random_values(m * k, 41));
        auto [b_cpu, b_gpu] = pair(bt ? Shape{k, n} : Shape{n, k}, DType::f32, random_values(n * k, 42));
        auto [o_cpu, o_gpu] = pair({m, n}, DType::f32, random_values(m * n, 43));
        cpu->gemm(o_cpu, a_cpu, at, b_cpu, bt, acc);
        gpu->gemm(o_gpu, a_gpu, at, b_gpu, bt, acc);
        const auto c = cpu->download(o_cpu), g = gpu->download(o_gpu);
        std::vector<double> bound(c.size(), 2.0 * k * std::ldexp(16.0 * k, -24));  // |a b| < 16 for N(0,1) pairs, loosely
        expect_gemm_close(g, c, bound, false, "gemm " + std::to_string(at) + std::to_string(bt) + std::to_string(acc));
      }
}

void expect_close(const std::vector<double>& g, const std::vector<double>& c, double rel, double abs,
                  const std::string& what) {
  ASSERT_EQ(g.size(), c.size()) << what;
  int bad = 0;
  for (std::size_t i = 0; i < g.size(); ++i) {
    if (std::fabs(g[i] - c[i]) > rel * std::fabs(c[i]) + abs && ++bad <= 3) {
      ADD_FAILURE() << what << "[" << i << "]: gpu " << g[i] << " cpu " << c[i];
    }
  }
  EXPECT_EQ(bad, 0) << what;
}

// The model and optimizer operations are compared with the CPU in model_ops_test.cpp and
// ops_table_test.cpp; the fused attention in attention_test.cpp. The reference attention
// kernels (head dims other than 64 and 128 take them) are checked here.
TEST_F(Cuda, AttentionMatchesTheCpu) {
  AttentionShape s{2, 33, 4, 2, 16};
  auto [q_c, q_g] = pair({s.tokens(), s.qkv_width()}, DType::bf16, random_values(s.tokens() * s.qkv_width(), 61));
  Tensor oc = cpu->empty({s.tokens(), s.q_width()}, DType::bf16), og = gpu->empty({s.tokens(), s.q_width()}, DType::bf16);
  AttentionSaved sc, sg;
  cpu->attention_forward(oc, sc, q_c, s);
  gpu->attention_forward(og, sg, q_g, s);
  expect_close(gpu->download(og), cpu->download(oc), 0x1p-7, 1e-6, "attention (expf: one BF16 ulp)");
  Tensor dc = cpu->empty(q_c.shape(), DType::bf16), dg = gpu->empty(q_g.shape(), DType::bf16);
  cpu->attention_backward(dc, oc, q_c, sc, s);
  gpu->attention_backward(dg, og, q_g, sg, s);
  expect_close(gpu->download(dg), cpu->download(dc), 0x1p-5, 1e-4, "attention backward");
}

// The linear layer of every recipe: forward and backward on the GPU against the CPU. Quantized
// operands are identical; the GEMMs' summation order differs (see the header), and a BF16
// output may round the other way: within two BF16 ulps plus the accumulation bound.
TEST_F(Cuda, LinearLayerOfEveryRecipe) {
  const std::int64_t M = 128, K = 128, N = 256;
  for (const std::string& name : recipe_names()) {
    const Recipe r = make_recipe(name);
    auto [x_c, x_g] = pair({M, K}, DType::bf16, random_values(M * K, 71));
    auto [w_c, w_g] = pair({N, K}, DType::f32, random_values(N * K, 72, 0.05));
    auto [dy_c, dy_g] = pair({M, N}, DType::bf16, random_values(M * N, 73));
    Tensor y_c = cpu->empty({M, N}, DType::bf16), y_g = gpu->empty({M, N}, DType::bf16);
    LinearSaved s_c, s_g;
    const LinearRandom rnd{5, 1, 9};
    linear_forward(*cpu, r, x_c, w_c, y_c, s_c, rnd);
    linear_forward(*gpu, r, x_g, w_g, y_g, s_g, rnd);
    expect_close(gpu->download(y_g), cpu->download(y_c), 0x1p-7, 1e-3, name + " forward");
    // Backward from the same dY on both sides.
    Tensor dx_c = cpu->empty({M, K}, DType::bf16), dx_g = gpu->empty({M, K}, DType::bf16);
    auto [dw_c, dw_g] = pair({N, K}, DType::f32, std::vector<double>(static_cast<std::size_t>(N * K), 0.0));
    linear_backward(*cpu, r, dy_c, w_c, s_c, dx_c, dw_c, rnd);
    linear_backward(*gpu, r, dy_g, w_g, s_g, dx_g, dw_g, rnd);
    expect_close(gpu->download(dx_g), cpu->download(dx_c), 0x1p-7, 1e-2, name + " dgrad");
    expect_close(gpu->download(dw_g), cpu->download(dw_c), 1e-4, 1e-2, name + " wgrad");
  }
}

// Bytes of the default memory pool in use, once the queued work (and its frees) are done.
std::int64_t pool_bytes_in_use() {
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  int device = 0;
  cudaMemPool_t pool = nullptr;
  EXPECT_EQ(cudaGetDevice(&device), cudaSuccess);
  EXPECT_EQ(cudaDeviceGetDefaultMemPool(&pool, device), cudaSuccess);
  std::uint64_t used = 0;
  EXPECT_EQ(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrUsedMemCurrent, &used), cudaSuccess);
  return static_cast<std::int64_t>(used);
}

// What a saved-less backward recomputes (linear_saved_for_backward) gives the backward of the
// forward's own save, bit for bit, for every recipe; and it holds only the quantized operands,
// not the BF16 copies the quantizers write for the emulated GEMM (no product takes them).
TEST_F(Cuda, SavedForBackwardIsWhatTheForwardSavedAndHoldsNoGemmCopies) {
  // Large enough that the copies (2 bytes per element of x and w: 10 MiB) stand out of the
  // pool's rounding of the two quantized tensors' allocations (allowed: 4 MiB).
  const std::int64_t M = 4096, K = 1024, N = 1024;
  for (const std::string& name : recipe_names()) {
    const Recipe r = make_recipe(name);
    Tensor x = gpu->empty({M, K}, DType::bf16), w = gpu->empty({N, K}, DType::f32), dy = gpu->empty({M, N}, DType::bf16);
    gpu->upload(x, random_values(M * K, 81));
    gpu->upload(w, random_values(N * K, 82, 0.05));
    gpu->upload(dy, random_values(M * N, 83));
    const LinearRandom rnd{5, 3, 11};
    const auto backward = [&](const LinearSaved& saved) {
      Tensor dx = gpu->empty({M, K}, DType::bf16), dw = gpu->zeros({N, K}, DType::f32);
      linear_backward(*gpu, r, dy, w, saved, dx, dw, rnd);
      return std::make_pair(gpu->download(dx), gpu->download(dw));
    };
    Tensor y = gpu->empty({M, N}, DType::bf16);
    LinearSaved forward_saved;
    linear_forward(*gpu, r, x, w, y, forward_saved, rnd);
    const auto expected = backward(forward_saved);
    forward_saved = LinearSaved{};
    const std::int64_t before = pool_bytes_in_use();
    const LinearSaved recomputed = linear_saved_for_backward(*gpu, r, x, w, rnd);
    const std::int64_t held = pool_bytes_in_use() - before;
    const std::int64_t quantized = static_cast<std::int64_t>(recomputed.xq.bytes + recomputed.wq.bytes);
    EXPECT_LE(held, quantized + (std::int64_t{4} << 20)) << name << ": " << held << " bytes held for " << quantized;
    const auto got = backward(recomputed);
    EXPECT_EQ(got.first, expected.first) << name << " dx";
    EXPECT_EQ(got.second, expected.second) << name << " dw";
  }
}

// A few training steps of the tiny model: the same losses to within the GEMMs' rounding.
TEST_F(Cuda, TrainingStepsTrackTheCpu) {
  for (const char* recipe : {"bf16", "quartet2"}) {
    const LlamaConfig c = llama_preset("tiny", 257);
    LlamaModel mc(*cpu, c, make_recipe(recipe), 3), mg(*gpu, c, make_recipe(recipe), 3);
    std::vector<std::int32_t> tok(256), tgt(256);
    for (int i = 0; i < 256; ++i) {
      tok[static_cast<std::size_t>(i)] = (i * 31 + 7) % 257;
      tgt[static_cast<std::size_t>(i)] = (i * 31 + 8) % 257;
    }
    Tensor tc = cpu->empty({256}, DType::i32), tgc = cpu->empty({256}, DType::i32);
    Tensor tg = gpu->empty({256}, DType::i32), tgg = gpu->empty({256}, DType::i32);
    cpu->upload_tokens(tc, tok);
    cpu->upload_tokens(tgc, tgt);
    gpu->upload_tokens(tg, tok);
    gpu->upload_tokens(tgg, tgt);
    const double lc = mc.forward_backward(tc, tgc, 2, 128, 1.0 / 256, 1);
    const double lg = mg.forward_backward(tg, tgg, 2, 128, 1.0 / 256, 1);
    EXPECT_NEAR(lg, lc, 1e-3 * lc) << recipe;
    double gc = 0, gg = 0;
    for (Parameter& p : mc.parameters()) gc += cpu->sum_of_squares(p.grad);
    for (Parameter& p : mg.parameters()) gg += gpu->sum_of_squares(p.grad);
    EXPECT_NEAR(std::sqrt(gg), std::sqrt(gc), 0.02 * std::sqrt(gc)) << recipe;
  }
}

}  // namespace
}  // namespace quartet

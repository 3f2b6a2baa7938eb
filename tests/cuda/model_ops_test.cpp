// The CUDA backend's model and optimizer operations (src/backend/cuda/ops.h: embedding,
// RMSNorm, SwiGLU, cross-entropy, AdamW) against the CPU backend, both through the Backend
// interface, on fresh random inputs at several shapes: odd widths, widths that are not a
// multiple of 8 and misaligned views (the scalar paths), one row, the widest rows kept in
// registers and wider ones, GPT-2's vocabulary of 50257 for the loss. Every test skips without
// a GPU.
//
// Bitwise (the same operations in the same order): embedding forward and backward (each
// token's rows added in position order, from the table gradient's value), the residual sum,
// and AdamW's parameters, moments and BF16 copy. Elsewhere the tolerance is derived next to
// each check from what differs: the order of FP32 sums, CUDA's expf, exp2f and log2f against
// the CPU's exp and log, and one BF16 rounding of values that differ before it. Each GPU
// operation is also run a second time from the same inputs: the same bits.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "quartet/backend/backend.h"
#include "quartet/backend/cuda.h"
#include "quartet/error.h"

namespace quartet {
namespace {

constexpr double kU = 0x1p-24;  // the unit roundoff of FP32

std::vector<double> random_values(std::int64_t n, std::uint64_t seed, double scale = 1.0) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> normal(0.0, scale);
  std::vector<double> v(static_cast<std::size_t>(n));
  for (double& x : v) x = normal(gen);
  return v;
}

std::vector<std::int32_t> random_tokens(std::int64_t n, std::int64_t vocab, std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::uniform_int_distribution<std::int32_t> pick(0, static_cast<std::int32_t>(vocab - 1));
  std::vector<std::int32_t> t(static_cast<std::size_t>(n));
  for (std::int32_t& x : t) x = pick(gen);
  return t;
}

// The spacing of BF16 values at |x| (8 significant bits, FP32's exponent range).
double bf16_ulp(double x) {
  int e = 0;
  std::frexp(std::fabs(x), &e);  // |x| in [2^(e-1), 2^e)
  return std::ldexp(1.0, std::max(e - 1, -126) - 7);
}

// One BF16 rounding on each side of values that were within `bound` before it: at most one
// BF16 ulp of the larger apart, plus the bound.
double stored_bound(DType dtype, double gpu, double cpu, double bound) {
  return bound + (dtype == DType::bf16 ? bf16_ulp(std::max(std::fabs(gpu), std::fabs(cpu))) : 0.0);
}

std::string shape_name(std::int64_t rows, std::int64_t cols) { return std::to_string(rows) + "x" + std::to_string(cols); }

// Equal bit for bit (the values come from f32, bf16 or f64 tensors, exactly as doubles).
void expect_identical(const std::vector<double>& gpu, const std::vector<double>& cpu, const std::string& what) {
  ASSERT_EQ(gpu.size(), cpu.size()) << what;
  int bad = 0;
  for (std::size_t i = 0; i < gpu.size(); ++i) {
    if (std::bit_cast<std::uint64_t>(gpu[i]) != std::bit_cast<std::uint64_t>(cpu[i]) && ++bad <= 3) {
      ADD_FAILURE() << what << " [" << i << "]: gpu " << gpu[i] << ", cpu " << cpu[i];
    }
  }
  EXPECT_EQ(bad, 0) << what << ": elements that differ";
}

// |gpu[i] - cpu[i]| <= bound(i) for every element.
template <class Bound>
void expect_within(const std::vector<double>& gpu, const std::vector<double>& cpu, Bound&& bound, const std::string& what) {
  ASSERT_EQ(gpu.size(), cpu.size()) << what;
  int bad = 0;
  for (std::size_t i = 0; i < gpu.size(); ++i) {
    const double b = bound(i);
    if (!(std::fabs(gpu[i] - cpu[i]) <= b) && ++bad <= 3) {
      ADD_FAILURE() << what << " [" << i << "]: gpu " << gpu[i] << ", cpu " << cpu[i] << ", |diff| "
                    << std::fabs(gpu[i] - cpu[i]) << " > " << b;
    }
  }
  EXPECT_EQ(bad, 0) << what << ": elements outside the tolerance";
}

std::string error_message(Backend& backend, const std::function<void()>& op) {
  try {
    op();
    backend.raise_pending_errors();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// One tensor on each backend.
struct Pair {
  Tensor cpu, gpu;
};

class CudaModelOps : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!cuda_available()) GTEST_SKIP() << cuda_device_description();
    gpu = make_cuda_backend();
    cpu = make_cpu_backend();
  }

  // The same values on both backends, rounded once (by the CPU) to the dtype. With an offset,
  // views that far into larger buffers (a misaligned start: the scalar paths).
  Pair pair(const Shape& shape, DType dtype, const std::vector<double>& values, std::int64_t offset = 0) {
    std::vector<double> padded(static_cast<std::size_t>(offset), 0.0);
    padded.insert(padded.end(), values.begin(), values.end());
    const Shape flat{static_cast<std::int64_t>(padded.size())};
    Tensor c = cpu->empty(flat, dtype), g = gpu->empty(flat, dtype);
    cpu->upload(c, padded);
    gpu->upload(g, cpu->download(c));
    return {c.view(offset, shape), g.view(offset, shape)};
  }

  Pair tokens(const std::vector<std::int32_t>& ids) {
    const Shape shape{static_cast<std::int64_t>(ids.size())};
    Tensor c = cpu->empty(shape, DType::i32), g = gpu->empty(shape, DType::i32);
    cpu->upload_tokens(c, ids);
    gpu->upload_tokens(g, ids);
    return {c, g};
  }

  // A fresh GPU tensor holding t's current values (to run an operation again from its start).
  Tensor gpu_copy(const Tensor& t) {
    Tensor c = gpu->empty(t.shape(), t.dtype());
    gpu->copy(c, t);
    return c;
  }

  std::unique_ptr<Backend> gpu, cpu;
};

// ---- embedding ----------------------------------------------------------------------------

TEST_F(CudaModelOps, EmbeddingForwardGathersTheCpusRows) {
  struct Case {
    std::int64_t rows, cols, vocab;
    DType table, out;
    std::int64_t offset;
  };
  const Case cases[] = {
      {1, 1, 1, DType::f32, DType::bf16, 0},     {7, 13, 11, DType::f32, DType::bf16, 0},
      {64, 768, 1000, DType::f32, DType::bf16, 0}, {33, 24, 5, DType::bf16, DType::f32, 0},
      {5, 4104, 300, DType::f32, DType::f32, 0},  {9, 64, 50, DType::f32, DType::bf16, 1},
  };
  std::uint64_t seed = 100;
  for (const Case& c : cases) {
    const std::string what = "embedding " + shape_name(c.rows, c.cols) + " of " + std::to_string(c.vocab) +
                             (c.offset ? " (misaligned table)" : "");
    auto table = pair({c.vocab, c.cols}, c.table, random_values(c.vocab * c.cols, ++seed), c.offset);
    auto ids = tokens(random_tokens(c.rows, c.vocab, ++seed));
    Tensor oc = cpu->empty({c.rows, c.cols}, c.out), og = gpu->empty({c.rows, c.cols}, c.out);
    cpu->embedding_forward(oc, ids.cpu, table.cpu);
    gpu->embedding_forward(og, ids.gpu, table.gpu);
    gpu->raise_pending_errors();
    const std::vector<double> got = gpu->download(og);
    expect_identical(got, cpu->download(oc), what);
    gpu->embedding_forward(og, ids.gpu, table.gpu);
    expect_identical(gpu->download(og), got, what + ": run twice");
  }
}

TEST_F(CudaModelOps, EmbeddingBackwardAddsEachTokensRowsInPositionOrder) {
  struct Case {
    std::int64_t rows, cols, vocab;
    DType dout;
  };
  // Few distinct tokens give long runs (over many 32-position batches); a vocabulary of one
  // sorts on one key bit; 50257 on sixteen.
  const Case cases[] = {
      {1, 8, 3, DType::bf16},   {300, 13, 7, DType::bf16},    {1000, 768, 5, DType::bf16},
      {100, 8, 1, DType::bf16}, {257, 64, 50257, DType::f32}, {4096, 40, 3, DType::f32},
  };
  std::uint64_t seed = 200;
  for (const Case& c : cases) {
    const std::string what = "embedding backward " + shape_name(c.rows, c.cols) + " of " + std::to_string(c.vocab);
    auto dtable = pair({c.vocab, c.cols}, DType::f32, random_values(c.vocab * c.cols, ++seed));
    auto dout = pair({c.rows, c.cols}, c.dout, random_values(c.rows * c.cols, ++seed));
    auto ids = tokens(random_tokens(c.rows, c.vocab, ++seed));
    Tensor again = gpu_copy(dtable.gpu);
    cpu->embedding_backward(dtable.cpu, ids.cpu, dout.cpu);
    gpu->embedding_backward(dtable.gpu, ids.gpu, dout.gpu);
    gpu->embedding_backward(again, ids.gpu, dout.gpu);
    gpu->raise_pending_errors();
    const std::vector<double> first = gpu->download(dtable.gpu);
    expect_identical(first, cpu->download(dtable.cpu), what + ": the CPU's additions in the CPU's order");
    expect_identical(gpu->download(again), first, what + ": run twice");
  }
}

TEST_F(CudaModelOps, EmbeddingReportsTokensOutsideTheTable) {
  const std::int64_t rows = 40, cols = 8, vocab = 50257;
  std::vector<std::int32_t> ids = random_tokens(rows, vocab, 300);
  ids[12] = 70000;
  ids[30] = -3;
  auto bad = tokens(ids);
  auto table = pair({vocab, cols}, DType::f32, random_values(vocab * cols, 301));

  // Forward: the CPU throws at once, the GPU when asked, with the same message (the first bad
  // position); the GPU's bad rows are NaN and the others the table's rows.
  Tensor oc = cpu->empty({rows, cols}, DType::bf16), og = gpu->empty({rows, cols}, DType::bf16);
  const std::string cpu_message = error_message(*cpu, [&] { cpu->embedding_forward(oc, bad.cpu, table.cpu); });
  const std::string gpu_message = error_message(*gpu, [&] { gpu->embedding_forward(og, bad.gpu, table.gpu); });
  EXPECT_NE(gpu_message.find("token 70000 at position 12"), std::string::npos) << gpu_message;
  EXPECT_NE(gpu_message.find("vocabulary of 50257"), std::string::npos) << gpu_message;
  EXPECT_EQ(gpu_message, cpu_message);
  EXPECT_EQ(error_message(*gpu, [] {}), "") << "reported once, then cleared";
  std::vector<std::int32_t> good_ids = ids;
  good_ids[12] = good_ids[30] = 0;
  auto good = tokens(good_ids);
  cpu->embedding_forward(oc, good.cpu, table.cpu);
  const std::vector<double> got = gpu->download(og), expected = cpu->download(oc);
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t j = 0; j < cols; ++j) {
      const auto i = static_cast<std::size_t>(r * cols + j);
      if (r == 12 || r == 30) {
        EXPECT_TRUE(std::isnan(got[i])) << "row " << r << " column " << j;
      } else {
        EXPECT_EQ(got[i], expected[i]) << "row " << r << " column " << j;
      }
    }
  }

  // Backward: the bad positions add nothing; the rest as on the CPU without them.
  auto dout = pair({rows, cols}, DType::bf16, random_values(rows * cols, 302));
  auto dtable = pair({vocab, cols}, DType::f32, random_values(vocab * cols, 303));
  const std::string backward_message =
      error_message(*gpu, [&] { gpu->embedding_backward(dtable.gpu, bad.gpu, dout.gpu); });
  EXPECT_NE(backward_message.find("embedding backward: token 70000 at position 12 is outside the vocabulary of 50257"),
            std::string::npos)
      << backward_message;
  std::vector<std::int32_t> kept_ids;
  std::vector<double> kept_rows;
  const std::vector<double> dout_values = cpu->download(dout.cpu);
  for (std::int64_t r = 0; r < rows; ++r) {
    if (r == 12 || r == 30) continue;
    kept_ids.push_back(ids[static_cast<std::size_t>(r)]);
    kept_rows.insert(kept_rows.end(), dout_values.begin() + r * cols, dout_values.begin() + (r + 1) * cols);
  }
  auto kept = tokens(kept_ids);
  auto kept_dout = pair({rows - 2, cols}, DType::bf16, kept_rows);
  cpu->embedding_backward(dtable.cpu, kept.cpu, kept_dout.cpu);
  expect_identical(gpu->download(dtable.gpu), cpu->download(dtable.cpu), "embedding backward without the bad positions");
}

// ---- argument checks ----------------------------------------------------------------------

TEST_F(CudaModelOps, ArgumentErrorsNameTheOperationAndWhatItGot) {
  const auto expect_error = [&](const std::function<void()>& op, const std::string& words) {
    const std::string m = error_message(*gpu, op);
    EXPECT_NE(m.find(words), std::string::npos) << "expected an error naming \"" << words << "\", got \"" << m << "\"";
  };
  Tensor x = gpu->zeros({4, 16}, DType::bf16), out = gpu->zeros({4, 16}, DType::bf16);
  Tensor rstd = gpu->zeros({4}, DType::f32), short_weight = gpu->zeros({15}, DType::f32);
  expect_error([&] { gpu->rmsnorm_forward(out, rstd, x, short_weight, 1e-5); }, "rmsnorm weight");
  Tensor odd = gpu->zeros({4, 15}, DType::bf16), half = gpu->zeros({4, 7}, DType::bf16);
  expect_error([&] { gpu->swiglu_forward(half, odd); }, "even width");
  Tensor logits = gpu->zeros({4, 16}, DType::bf16), f32_grad = gpu->zeros({4, 16}, DType::f32);
  Tensor targets = gpu->zeros({4}, DType::i32), loss = gpu->empty({1}, DType::f64);
  expect_error([&] { gpu->cross_entropy(f32_grad, logits, targets, logits.dim(1), 1.0, loss); }, "cross_entropy dlogits");
  Tensor bf16_table_grad = gpu->zeros({10, 16}, DType::bf16);
  expect_error([&] { gpu->embedding_backward(bf16_table_grad, targets, x); }, "must be f32");
  Tensor p = gpu->zeros({8}, DType::f32), g = gpu->zeros({8}, DType::f32), m = gpu->zeros({8}, DType::f32),
         v = gpu->zeros({8}, DType::f32), none, status = gpu->empty({kStepSlots}, DType::f64);
  expect_error([&] { gpu->adamw_step(p, none, g, m, v, {{4, 5, true}}, AdamWStep{}, status); },
               "segment [4, +5) is outside the 8 parameters");
}

// ---- RMSNorm ------------------------------------------------------------------------------
//
// Forward: both sides sum the squares of a row in FP32, in different orders. For positive terms
// a sum's rounding error is at most (its depth of additions) x 2^-24 of the sum; the CPU's depth
// is cols, the GPU's at most cols + 16 (a thread's terms, a warp butterfly, the team's warps),
// so the sums differ by at most (2 cols + 16) 2^-24 relative. rstd = 1/sqrt(sum/cols + eps)
// halves that and adds at most four correctly rounded operations on each side: (cols + 16)
// 2^-24 relative. out = (x s) w adds two more: (cols + 24) 2^-24 relative before it is stored,
// and one BF16 ulp more when stored in BF16.

struct NormCase {
  std::int64_t rows, cols;
  DType x, weight, out;
  std::int64_t offset;  // of x and out: a misaligned start
};

// Rows in registers with a warp per row (up to 1024 columns), with 2..8 warps per row (up to
// 8192), and the looping kernels (wider, width not a multiple of 8, misaligned).
const NormCase kNormCases[] = {
    {1, 1, DType::bf16, DType::f32, DType::bf16, 0},    {1, 8, DType::bf16, DType::f32, DType::bf16, 0},
    {7, 13, DType::bf16, DType::f32, DType::bf16, 0},   {64, 768, DType::bf16, DType::f32, DType::bf16, 0},
    {130, 640, DType::bf16, DType::f32, DType::bf16, 0}, {33, 1000, DType::bf16, DType::f32, DType::bf16, 0},
    {9, 3584, DType::bf16, DType::f32, DType::bf16, 0}, {3, 8192, DType::bf16, DType::f32, DType::bf16, 0},
    {2, 8200, DType::bf16, DType::f32, DType::bf16, 0}, {5, 2050, DType::bf16, DType::f32, DType::bf16, 0},
    {17, 768, DType::f32, DType::bf16, DType::f32, 0},  {11, 256, DType::bf16, DType::f32, DType::bf16, 3},
};

std::string norm_name(const NormCase& c) {
  return shape_name(c.rows, c.cols) + " x " + dtype_name(c.x) + ", weight " + dtype_name(c.weight) + ", out " +
         dtype_name(c.out) + (c.offset ? " (misaligned)" : "");
}

void expect_norm_outputs_close(const NormCase& c, const std::vector<double>& out_gpu, const std::vector<double>& out_cpu,
                               const std::vector<double>& rstd_gpu, const std::vector<double>& rstd_cpu,
                               const std::string& what) {
  const double cols = static_cast<double>(c.cols);
  expect_within(
      rstd_gpu, rstd_cpu, [&](std::size_t i) { return (cols + 16) * kU * std::fabs(rstd_cpu[i]); }, what + " rstd");
  expect_within(
      out_gpu, out_cpu,
      [&](std::size_t i) { return stored_bound(c.out, out_gpu[i], out_cpu[i], (cols + 24) * kU * std::fabs(out_cpu[i])); },
      what + " output");
}

TEST_F(CudaModelOps, RmsnormForwardMatchesTheCpu) {
  std::uint64_t seed = 400;
  for (const NormCase& c : kNormCases) {
    const std::string what = "rmsnorm " + norm_name(c);
    auto x = pair({c.rows, c.cols}, c.x, random_values(c.rows * c.cols, ++seed, 2.0), c.offset);
    auto w = pair({c.cols}, c.weight, random_values(c.cols, ++seed));
    auto out = pair({c.rows, c.cols}, c.out, std::vector<double>(static_cast<std::size_t>(c.rows * c.cols)), c.offset);
    Tensor rc = cpu->empty({c.rows}, DType::f32), rg = gpu->empty({c.rows}, DType::f32);
    cpu->rmsnorm_forward(out.cpu, rc, x.cpu, w.cpu, 1e-5);
    gpu->rmsnorm_forward(out.gpu, rg, x.gpu, w.gpu, 1e-5);
    const std::vector<double> out_gpu = gpu->download(out.gpu), rstd_gpu = gpu->download(rg);
    expect_norm_outputs_close(c, out_gpu, cpu->download(out.cpu), rstd_gpu, cpu->download(rc), what);
    gpu->rmsnorm_forward(out.gpu, rg, x.gpu, w.gpu, 1e-5);
    expect_identical(gpu->download(out.gpu), out_gpu, what + ": run twice");
    expect_identical(gpu->download(rg), rstd_gpu, what + " rstd: run twice");
  }
}

TEST_F(CudaModelOps, ResidualRmsnormStoresTheSumAndNormalisesIt) {
  std::uint64_t seed = 500;
  for (const NormCase& c : kNormCases) {
    const std::string what = "residual rmsnorm " + norm_name(c);
    const Shape shape{c.rows, c.cols};
    const std::vector<double> zeros(static_cast<std::size_t>(c.rows * c.cols));
    auto x = pair(shape, c.x, random_values(c.rows * c.cols, ++seed, 2.0), c.offset);
    auto y = pair(shape, c.x, random_values(c.rows * c.cols, ++seed, 0.5));
    auto sum = pair(shape, c.x, zeros, c.offset);
    auto out = pair(shape, c.out, zeros, c.offset);
    auto w = pair({c.cols}, c.weight, random_values(c.cols, ++seed));
    Tensor rc = cpu->empty({c.rows}, DType::f32), rg = gpu->empty({c.rows}, DType::f32);
    cpu->residual_rmsnorm_forward(sum.cpu, out.cpu, rc, x.cpu, y.cpu, w.cpu, 1e-5);
    gpu->residual_rmsnorm_forward(sum.gpu, out.gpu, rg, x.gpu, y.gpu, w.gpu, 1e-5);
    expect_identical(gpu->download(sum.gpu), cpu->download(sum.cpu), what + " sum (one FP32 addition, one rounding)");
    const std::vector<double> out_gpu = gpu->download(out.gpu);
    expect_norm_outputs_close(c, out_gpu, cpu->download(out.cpu), gpu->download(rg), cpu->download(rc), what);
    gpu->residual_rmsnorm_forward(sum.gpu, out.gpu, rg, x.gpu, y.gpu, w.gpu, 1e-5);
    expect_identical(gpu->download(out.gpu), out_gpu, what + ": run twice");
  }
}

// Backward, per row with s = rstd (the same input on both sides): dot = sum dy w x is summed in
// FP32 in different orders; each side is within (cols + 16) 2^-24 sum|dy w x| of the exact dot
// (the products' two roundings and the additions' depth), so they differ by at most twice that.
// coef = s^3 dot / cols inherits s^3 |d dot| / cols plus four roundings a side (8 2^-24 |coef|);
// dx = s dy w - x coef (+ old dx) inherits |x| |d coef| plus its own roundings, at most
// 4 2^-24 (|s dy w| + |x coef|) (+ 2 2^-24 |old| + |dx|); all doubled for second-order terms,
// then one BF16 ulp when stored in BF16. The weight gradient's terms dy x s are computed alike on
// both sides and summed in different orders: within 2 (rows + 80) 2^-24 of
// |dweight| + sum |dy x s| (the GPU's depth: a team's rows, the block's teams, 32 lanes of
// blocks, the 32 lanes, the final add).
TEST_F(CudaModelOps, RmsnormBackwardMatchesTheCpu) {
  struct Case {
    std::int64_t rows, cols;
    DType dtype;
    std::int64_t offset;
  };
  const Case cases[] = {
      {1, 8, DType::bf16, 0},  {7, 13, DType::bf16, 0},    {64, 768, DType::bf16, 0}, {300, 768, DType::bf16, 0},
      {8300, 64, DType::bf16, 0} /* more row groups than partial blocks: teams take several rows */,
      {40, 3584, DType::bf16, 0}, {9, 8192, DType::bf16, 0}, {1030, 2050, DType::bf16, 0}, {3, 9000, DType::f32, 0},
      {21, 512, DType::bf16, 5},
  };
  std::uint64_t seed = 600;
  for (const Case& c : cases) {
    for (const bool accumulate : {false, true}) {
      const std::string what = "rmsnorm backward " + shape_name(c.rows, c.cols) + " " + dtype_name(c.dtype) +
                               (accumulate ? " accumulating" : "") + (c.offset ? " (misaligned)" : "");
      const Shape shape{c.rows, c.cols};
      const std::int64_t n = c.rows * c.cols;
      auto x = pair(shape, c.dtype, random_values(n, ++seed, 2.0), c.offset);
      auto dout = pair(shape, c.dtype, random_values(n, ++seed), c.offset);
      auto dx = pair(shape, c.dtype, random_values(n, ++seed, 3.0), c.offset);
      auto w = pair({c.cols}, DType::f32, random_values(c.cols, ++seed));
      auto dw = pair({c.cols}, DType::f32, random_values(c.cols, ++seed, 10.0));
      // rstd from the CPU's forward, the same input on both sides.
      Tensor y = cpu->empty(shape, c.dtype), rc = cpu->empty({c.rows}, DType::f32);
      cpu->rmsnorm_forward(y, rc, x.cpu, w.cpu, 1e-5);
      auto rstd = pair({c.rows}, DType::f32, cpu->download(rc));
      Tensor dx_again = gpu_copy(dx.gpu), dw_again = gpu_copy(dw.gpu);
      const std::vector<double> old_dx = cpu->download(dx.cpu), old_dw = cpu->download(dw.cpu);
      cpu->rmsnorm_backward(dx.cpu, dw.cpu, dout.cpu, x.cpu, w.cpu, rstd.cpu, accumulate);
      gpu->rmsnorm_backward(dx.gpu, dw.gpu, dout.gpu, x.gpu, w.gpu, rstd.gpu, accumulate);

      const std::vector<double> xv = cpu->download(x.cpu), dv = cpu->download(dout.cpu), wv = cpu->download(w.cpu),
                                sv = cpu->download(rstd.cpu);
      const double cols = static_cast<double>(c.cols);
      std::vector<double> dx_bound(static_cast<std::size_t>(n)), dw_magnitude(old_dw.size());
      for (std::size_t j = 0; j < old_dw.size(); ++j) dw_magnitude[j] = std::fabs(old_dw[j]);
      for (std::int64_t r = 0; r < c.rows; ++r) {
        const double s = sv[static_cast<std::size_t>(r)];
        double dot = 0, dot_magnitude = 0;
        for (std::int64_t j = 0; j < c.cols; ++j) {
          const auto i = static_cast<std::size_t>(r * c.cols + j);
          dot += dv[i] * wv[static_cast<std::size_t>(j)] * xv[i];
          dot_magnitude += std::fabs(dv[i] * wv[static_cast<std::size_t>(j)] * xv[i]);
          dw_magnitude[static_cast<std::size_t>(j)] += std::fabs(dv[i] * xv[i] * s);
        }
        const double coef = s * s * s * dot / cols;
        const double coef_diff = s * s * s * 2 * (cols + 16) * kU * dot_magnitude / cols + 8 * kU * std::fabs(coef);
        for (std::int64_t j = 0; j < c.cols; ++j) {
          const auto i = static_cast<std::size_t>(r * c.cols + j);
          const double sdw = std::fabs(s * dv[i] * wv[static_cast<std::size_t>(j)]), xc = std::fabs(xv[i] * coef);
          double b = std::fabs(xv[i]) * coef_diff + 4 * kU * (sdw + xc);
          if (accumulate) b += 2 * kU * (std::fabs(old_dx[i]) + sdw + xc);
          dx_bound[i] = 2 * b;
        }
      }
      const std::vector<double> dx_gpu = gpu->download(dx.gpu), dx_cpu = cpu->download(dx.cpu);
      expect_within(
          dx_gpu, dx_cpu, [&](std::size_t i) { return stored_bound(c.dtype, dx_gpu[i], dx_cpu[i], dx_bound[i]); },
          what + " dx");
      const std::vector<double> dw_gpu = gpu->download(dw.gpu);
      expect_within(
          dw_gpu, cpu->download(dw.cpu),
          [&](std::size_t j) { return 2 * (static_cast<double>(c.rows) + 80) * kU * dw_magnitude[j]; }, what + " dweight");

      gpu->rmsnorm_backward(dx_again, dw_again, dout.gpu, x.gpu, w.gpu, rstd.gpu, accumulate);
      expect_identical(gpu->download(dx_again), dx_gpu, what + " dx: run twice");
      expect_identical(gpu->download(dw_again), dw_gpu, what + " dweight: run twice");
    }
  }
}

// ---- SwiGLU -------------------------------------------------------------------------------
//
// The CPU's formulas and operation order on both sides; only exp differs (CUDA's expf is within
// 2 ulp, glibc's within 1). Forward, g / (1 + exp(-g)) * u: the exp's difference passes through
// 1 + e and the division at most unchanged in relative terms, and each side rounds three more
// times: within 8 2^-24 relative. Backward: every intermediate of d u sig (1 + g (1 - sig)) and
// d g sig is bounded by |d| (|u| + 1) (1 + |g|) and each side's error by 8 2^-24 of that (1 - sig
// and 1 + g (1 - sig) can cancel, so the bound is absolute): within 16 2^-24 of it. Then one BF16
// ulp when stored in BF16.

struct SwigluCase {
  std::int64_t rows, f;
  DType dtype;
  std::int64_t offset;
};

const SwigluCase kSwigluCases[] = {
    {1, 1, DType::bf16, 0},    {3, 13, DType::bf16, 0}, {64, 2048, DType::bf16, 0}, {5, 4104, DType::f32, 0},
    {300, 8, DType::bf16, 0}, {7, 64, DType::bf16, 2},
};

std::string swiglu_name(const SwigluCase& c) {
  return shape_name(c.rows, 2 * c.f) + " " + dtype_name(c.dtype) + (c.offset ? " (misaligned)" : "");
}

TEST_F(CudaModelOps, SwigluForwardMatchesTheCpu) {
  std::uint64_t seed = 700;
  for (const SwigluCase& c : kSwigluCases) {
    const std::string what = "swiglu " + swiglu_name(c);
    auto gate_up = pair({c.rows, 2 * c.f}, c.dtype, random_values(c.rows * 2 * c.f, ++seed, 2.0), c.offset);
    Tensor oc = cpu->empty({c.rows, c.f}, c.dtype), og = gpu->empty({c.rows, c.f}, c.dtype);
    cpu->swiglu_forward(oc, gate_up.cpu);
    gpu->swiglu_forward(og, gate_up.gpu);
    const std::vector<double> got = gpu->download(og), expected = cpu->download(oc);
    expect_within(
        got, expected,
        [&](std::size_t i) { return stored_bound(c.dtype, got[i], expected[i], 8 * kU * std::fabs(expected[i])); }, what);
    gpu->swiglu_forward(og, gate_up.gpu);
    expect_identical(gpu->download(og), got, what + ": run twice");
  }
}

TEST_F(CudaModelOps, SwigluBackwardMatchesTheCpu) {
  std::uint64_t seed = 800;
  for (const SwigluCase& c : kSwigluCases) {
    const std::string what = "swiglu backward " + swiglu_name(c);
    auto gate_up = pair({c.rows, 2 * c.f}, c.dtype, random_values(c.rows * 2 * c.f, ++seed, 2.0), c.offset);
    auto dout = pair({c.rows, c.f}, c.dtype, random_values(c.rows * c.f, ++seed));
    Tensor dc = cpu->empty({c.rows, 2 * c.f}, c.dtype), dg = gpu->empty({c.rows, 2 * c.f}, c.dtype);
    cpu->swiglu_backward(dc, dout.cpu, gate_up.cpu);
    gpu->swiglu_backward(dg, dout.gpu, gate_up.gpu);
    const std::vector<double> got = gpu->download(dg), expected = cpu->download(dc);
    const std::vector<double> gu = cpu->download(gate_up.cpu), d = cpu->download(dout.cpu);
    expect_within(
        got, expected,
        [&](std::size_t i) {
          const std::size_t row = i / static_cast<std::size_t>(2 * c.f), j = i % static_cast<std::size_t>(2 * c.f) %
                                                                               static_cast<std::size_t>(c.f);
          const std::size_t at = row * static_cast<std::size_t>(2 * c.f) + j;
          const double g = gu[at], u = gu[at + static_cast<std::size_t>(c.f)];
          const double dd = d[row * static_cast<std::size_t>(c.f) + j];
          return stored_bound(c.dtype, got[i], expected[i],
                              16 * kU * std::fabs(dd) * (std::fabs(u) + 1) * (1 + std::fabs(g)));
        },
        what);
    gpu->swiglu_backward(dg, dout.gpu, gate_up.gpu);
    expect_identical(gpu->download(dg), got, what + ": run twice");
  }
}

// ---- cross-entropy ------------------------------------------------------------------------
//
// The CPU works in double; the GPU sums exp(x - max) in FP32 (a thread's ~50 terms, a 10-level
// merge tree whose steps multiply by an exp2f): at most about 100 roundings, 6e-6 relative, so a
// row's loss log(sum) + max - x[target] is within 2e-5 (plus 2^-24 of the loss) of the CPU's.
// softmax_j = exp2((x_j - max) log2 e - log2 sum): the exponent's roundings (three of an
// argument up to about 40) and log2 of the sum's error give at most about 2e-5 relative: we allow
// 3e-5 of p, plus 2^-23 absolute for p - 1 at the target, 2^-23 relative for the scale's rounding
// to float, and one BF16 ulp when stored in BF16.

struct LossCase {
  std::int64_t rows, vocab;
  DType dtype;
  double scale;
};

std::string loss_name(const LossCase& c) {
  return shape_name(c.rows, c.vocab) + " " + dtype_name(c.dtype) + " scale " + std::to_string(c.scale);
}

// Targets in [0, vocab) with the first row's at 0 and the last row's at vocab - 1 (a row's
// scalar head and tail), and row 1 masked when there are three rows or more.
std::vector<std::int32_t> loss_targets(const LossCase& c, std::uint64_t seed) {
  std::vector<std::int32_t> t = random_tokens(c.rows, c.vocab, seed);
  t.front() = 0;
  t.back() = static_cast<std::int32_t>(c.vocab - 1);
  if (c.rows >= 3) t[1] = -1;
  return t;
}

class CudaCrossEntropy : public CudaModelOps {
 protected:
  // Both backends from the same logits and targets (in place when asked), loss_sum starting
  // at 1.25 (the operation adds to it); checks the gradient and the loss as above.
  void expect_matches_cpu(const LossCase& c, const std::vector<std::int32_t>& targets, bool in_place,
                          std::uint64_t seed, const std::string& what) {
    const Shape shape{c.rows, c.vocab};
    auto logits = pair(shape, c.dtype, random_values(c.rows * c.vocab, seed, 3.0));
    auto ids = tokens(targets);
    Tensor dc = in_place ? logits.cpu : cpu->empty(shape, c.dtype);
    Tensor dg = in_place ? logits.gpu : gpu->empty(shape, c.dtype);
    auto loss = pair({1}, DType::f64, {1.25});
    cpu->cross_entropy(dc, logits.cpu, ids.cpu, logits.cpu.dim(1), c.scale, loss.cpu);
    gpu->cross_entropy(dg, logits.gpu, ids.gpu, logits.gpu.dim(1), c.scale, loss.gpu);
    gpu->raise_pending_errors();
    std::int64_t counted = 0;
    for (std::int32_t t : targets) counted += t >= 0;
    const double loss_gpu = gpu->download(loss.gpu)[0], loss_cpu = cpu->download(loss.cpu)[0];
    EXPECT_NEAR(loss_gpu, loss_cpu, 2e-5 * static_cast<double>(counted) + kU * std::fabs(loss_cpu)) << what << " loss";
    const std::vector<double> got = gpu->download(dg), expected = cpu->download(dc);
    const double scale = std::fabs(c.scale);
    expect_within(
        got, expected,
        [&](std::size_t i) {
          const auto row = static_cast<std::size_t>(static_cast<std::int64_t>(i) / c.vocab);
          const bool at_target = static_cast<std::int64_t>(i) % c.vocab == targets[row];
          const double p = std::fabs(expected[i] / c.scale + (at_target ? 1.0 : 0.0));
          return stored_bound(c.dtype, got[i], expected[i],
                              scale * (3e-5 * p + 0x1p-23) + 0x1p-23 * std::fabs(expected[i]));
        },
        what + " gradient");
  }
};

TEST_F(CudaCrossEntropy, MatchesTheCpu) {
  // Odd vocabularies leave rows unaligned (scalar heads and tails of every length); 32000 BF16
  // rows are aligned; 3 and 8 are shorter than a 16-byte vector or about one.
  const LossCase cases[] = {
      {1, 1, DType::f32, 1.0},     {3, 7, DType::f32, 0.5},          {5, 50257, DType::bf16, 1.0 / 8192},
      {4, 50257, DType::f32, 0.01}, {6, 32000, DType::bf16, 1.0},    {3, 1025, DType::bf16, 2.0},
      {4, 3, DType::bf16, 1.0},     {9, 8, DType::bf16, -1.0},
  };
  std::uint64_t seed = 900;
  for (const LossCase& c : cases) {
    seed += 2;
    expect_matches_cpu(c, loss_targets(c, seed), false, seed + 1, "cross_entropy " + loss_name(c));
  }
}

TEST_F(CudaCrossEntropy, InPlaceGradientOverwritesTheLogits) {
  const LossCase cases[] = {{4, 50257, DType::bf16, 1.0 / 4096}, {3, 1001, DType::f32, 1.0}};
  std::uint64_t seed = 1000;
  for (const LossCase& c : cases) {
    seed += 2;
    expect_matches_cpu(c, loss_targets(c, seed), true, seed + 1, "in-place cross_entropy " + loss_name(c));
  }
}

// The model pads the vocabulary to a multiple of 128 (aligned GEMMs): with the padding columns
// full of large values, the loss and the vocabulary's gradient are what the unpadded logits give
// (up to the order of the row's FP32 sums, which follows the rows' alignment: the loss within
// the 2e-5 per row derived above, the gradient within two BF16 ulps), and the padding's gradient
// is exactly zero.
TEST_F(CudaCrossEntropy, PaddingColumnsTakeNoPart) {
  const std::int64_t rows = 5, vocab = 50257, width = 50304;
  const auto values = random_values(rows * vocab, 1200, 3.0);
  std::vector<double> padded(static_cast<std::size_t>(rows * width), 40.0);
  for (std::int64_t i = 0; i < rows; ++i)
    for (std::int64_t j = 0; j < vocab; ++j) padded[static_cast<std::size_t>(i * width + j)] = values[static_cast<std::size_t>(i * vocab + j)];
  auto plain = pair({rows, vocab}, DType::bf16, values), wide = pair({rows, width}, DType::bf16, padded);
  auto ids = tokens({0, 17, 50256, -1, 4000});
  auto plain_loss = pair({1}, DType::f64, {0.0}), wide_loss = pair({1}, DType::f64, {0.0});
  gpu->cross_entropy(plain.gpu, plain.gpu, ids.gpu, vocab, 0.25, plain_loss.gpu);
  gpu->cross_entropy(wide.gpu, wide.gpu, ids.gpu, vocab, 0.25, wide_loss.gpu);
  EXPECT_NEAR(gpu->download(wide_loss.gpu)[0], gpu->download(plain_loss.gpu)[0], 2e-5 * 4);
  const auto g = gpu->download(plain.gpu), w = gpu->download(wide.gpu);
  std::int64_t mismatches = 0;
  for (std::int64_t i = 0; i < rows; ++i) {
    for (std::int64_t j = 0; j < width; ++j) {
      const double want = j < vocab ? g[static_cast<std::size_t>(i * vocab + j)] : 0.0;
      const double bound = j < vocab ? std::ldexp(std::fabs(want), -7) + 1e-30 : 0.0;
      if (std::fabs(w[static_cast<std::size_t>(i * width + j)] - want) > bound && ++mismatches <= 3) {
        ADD_FAILURE() << "row " << i << " column " << j << ": " << w[static_cast<std::size_t>(i * width + j)] << " vs " << want;
      }
    }
  }
  EXPECT_EQ(mismatches, 0);
  auto bad = tokens({vocab, 0, 0, 0, 0});  // a padding column is not a class
  gpu->cross_entropy(wide.gpu, wide.gpu, bad.gpu, vocab, 0.25, wide_loss.gpu);
  EXPECT_THROW(gpu->raise_pending_errors(), Error);
}

TEST_F(CudaCrossEntropy, SameBitsOnEveryCall) {
  const LossCase c{64, 50257, DType::bf16, 1.0 / 16384};
  auto logits = pair({c.rows, c.vocab}, c.dtype, random_values(c.rows * c.vocab, 1100, 3.0));
  auto ids = tokens(loss_targets(c, 1101));
  std::vector<double> gradients[2], losses[2];
  for (int run = 0; run < 2; ++run) {
    Tensor d = gpu->empty({c.rows, c.vocab}, c.dtype);
    auto loss = pair({1}, DType::f64, {0.0});
    gpu->cross_entropy(d, logits.gpu, ids.gpu, logits.gpu.dim(1), c.scale, loss.gpu);
    gradients[run] = gpu->download(d);
    losses[run] = gpu->download(loss.gpu);
  }
  expect_identical(gradients[1], gradients[0], "cross_entropy gradient, run twice");
  expect_identical(losses[1], losses[0], "cross_entropy loss, run twice");
}

TEST_F(CudaCrossEntropy, ReportsTargetsOutsideTheVocabulary) {
  const LossCase c{6, 1001, DType::f32, 0.5};
  std::vector<std::int32_t> targets = random_tokens(c.rows, c.vocab, 1200);
  targets[2] = 1001;
  targets[4] = -7;
  auto logits = pair({c.rows, c.vocab}, c.dtype, random_values(c.rows * c.vocab, 1201, 3.0));
  auto ids = tokens(targets);
  Tensor dc = cpu->empty({c.rows, c.vocab}, c.dtype), dg = gpu->empty({c.rows, c.vocab}, c.dtype);
  auto loss = pair({1}, DType::f64, {0.0});
  const std::string cpu_message =
      error_message(*cpu, [&] { cpu->cross_entropy(dc, logits.cpu, ids.cpu, logits.cpu.dim(1), c.scale, loss.cpu); });
  const std::string gpu_message =
      error_message(*gpu, [&] { gpu->cross_entropy(dg, logits.gpu, ids.gpu, logits.gpu.dim(1), c.scale, loss.gpu); });
  EXPECT_NE(gpu_message.find("target 1001 at row 2"), std::string::npos) << gpu_message;
  EXPECT_EQ(gpu_message, cpu_message);
  EXPECT_EQ(error_message(*gpu, [] {}), "") << "reported once, then cleared";
  EXPECT_TRUE(std::isnan(gpu->download(loss.gpu)[0])) << "a bad row's loss is NaN, so the step cannot apply";
  // The bad rows' gradients are zero; the others as on the CPU with those rows masked.
  std::vector<std::int32_t> masked = targets;
  masked[2] = masked[4] = -1;
  auto masked_ids = tokens(masked);
  auto cpu_loss = pair({1}, DType::f64, {0.0});
  cpu->cross_entropy(dc, logits.cpu, masked_ids.cpu, logits.cpu.dim(1), c.scale, cpu_loss.cpu);
  const std::vector<double> got = gpu->download(dg), expected = cpu->download(dc);
  expect_within(
      got, expected,
      [&](std::size_t i) {
        const double p = std::fabs(expected[i] / c.scale) + 1.0;
        return c.scale * (3e-5 * p + 0x1p-23) + 0x1p-23 * std::fabs(expected[i]);
      },
      "cross_entropy gradient around bad targets");
  for (std::int64_t j = 0; j < c.vocab; ++j) {
    EXPECT_EQ(got[static_cast<std::size_t>(2 * c.vocab + j)], 0.0) << "row 2, column " << j;
    EXPECT_EQ(got[static_cast<std::size_t>(4 * c.vocab + j)], 0.0) << "row 4, column " << j;
  }
}

// ---- AdamW --------------------------------------------------------------------------------
//
// The same FP32 operations in the same order on both sides: parameters, moments and the BF16
// copy bit for bit. The gradient norm is a double sum of squares in another order (each side
// within (n + 16) 2^-53 relative of the exact sum for n = 1e5 terms): 1e-10 relative. (The clip
// factor float(max_grad_norm / norm) could in principle round differently when the two norms
// straddle a float rounding boundary: about one chance in 1e8.)

struct FlatState {
  Pair params, params_bf16, grads, m, v, status;
};

class CudaAdamW : public CudaModelOps {
 protected:
  // Flat buffers of n elements, `offset` elements into their allocations; the BF16 copy of
  // the parameters starts at zero.
  FlatState state(std::int64_t n, std::int64_t offset, double loss, std::uint64_t seed) {
    std::vector<double> v = random_values(n, seed + 4, 1e-3);
    for (double& x : v) x *= x;
    return {pair({n}, DType::f32, random_values(n, seed, 0.02), offset),
            pair({n}, DType::bf16, std::vector<double>(static_cast<std::size_t>(n)), offset),
            pair({n}, DType::f32, random_values(n, seed + 2, 1e-3), offset),
            pair({n}, DType::f32, random_values(n, seed + 3, 1e-3), offset),
            pair({n}, DType::f32, v, offset),
            pair({kStepSlots}, DType::f64, {loss, 0.0, 0.0, 0.0, 0.0})};
  }

  void step(Backend& be, FlatState& s, bool cpu_side, bool with_bf16, const std::vector<ParameterSegment>& segments,
            const AdamWStep& hp) {
    const auto side = [&](Pair& p) -> Tensor& { return cpu_side ? p.cpu : p.gpu; };
    Tensor none;
    be.adamw_step(side(s.params), with_bf16 ? side(s.params_bf16) : none, side(s.grads), side(s.m), side(s.v), segments,
                  hp, side(s.status));
  }

  void expect_same_state(FlatState& s, const std::string& what) {
    expect_identical(gpu->download(s.params.gpu), cpu->download(s.params.cpu), what + " parameters");
    expect_identical(gpu->download(s.m.gpu), cpu->download(s.m.cpu), what + " first moments");
    expect_identical(gpu->download(s.v.gpu), cpu->download(s.v.cpu), what + " second moments");
    expect_identical(gpu->download(s.params_bf16.gpu), cpu->download(s.params_bf16.cpu), what + " BF16 parameters");
  }
};

TEST_F(CudaAdamW, StepIsBitwiseTheCpus) {
  const std::int64_t n = 100003;
  // Unaligned segment ends, an empty segment, gaps no segment covers (left untouched), and
  // segments of several 16384-element chunks.
  const std::vector<ParameterSegment> segments = {
      {0, 1000, true}, {5, 0, true}, {1003, 50001, false}, {51010, 48990, true}, {100000, 3, false}};
  std::uint64_t seed = 1300;
  for (const std::int64_t offset : {0, 1}) {
    for (const double max_grad_norm : {1e9, 0.1}) {  // the gradients' norm is about 0.32
      for (const bool with_bf16 : {true, false}) {
        const std::string what = std::string("adamw") + (offset ? " (misaligned buffers)" : "") +
                                 (max_grad_norm < 1 ? " clipped" : "") + (with_bf16 ? " with the BF16 copy" : "");
        seed += 10;
        FlatState s = state(n, offset, 2.5, seed);
        const AdamWStep hp{3e-4, 0.9, 0.95, 1e-8, 0.1, 7, max_grad_norm};
        step(*cpu, s, true, with_bf16, segments, hp);
        step(*gpu, s, false, with_bf16, segments, hp);
        expect_same_state(s, what);
        const std::vector<double> sg = gpu->download(s.status.gpu), sc = cpu->download(s.status.cpu);
        EXPECT_EQ(sg[kStepLoss], 2.5) << what << ": the loss slot is read, not written";
        EXPECT_NEAR(sg[kStepGradNorm], sc[kStepGradNorm], 1e-10 * sc[kStepGradNorm]) << what;
        EXPECT_EQ(sg[kStepApplied], 1.0) << what;
        EXPECT_EQ(sg[kStepNonFiniteInput], 0.0) << what;
        // A second step from the first one's state: the moments' history matters too.
        const AdamWStep next{3e-4, 0.9, 0.95, 1e-8, 0.1, 8, max_grad_norm};
        step(*cpu, s, true, with_bf16, segments, next);
        step(*gpu, s, false, with_bf16, segments, next);
        expect_same_state(s, what + ", second step");
      }
    }
  }
}

TEST_F(CudaAdamW, SkipsStepsThatCannotApply) {
  const std::int64_t n = 4099;
  const std::vector<ParameterSegment> segments = {{0, n, true}};
  const AdamWStep hp{1e-3, 0.9, 0.95, 1e-8, 0.1, 3, 1.0};
  const auto expect_untouched = [&](FlatState& s, const std::vector<double> (&before)[3], const std::string& what) {
    expect_identical(gpu->download(s.params.gpu), before[0], what + ": parameters untouched");
    expect_identical(gpu->download(s.m.gpu), before[1], what + ": first moments untouched");
    expect_identical(gpu->download(s.v.gpu), before[2], what + ": second moments untouched");
  };

  {  // A non-finite loss.
    FlatState s = state(n, 0, NAN, 1400);
    const std::vector<double> before[3] = {gpu->download(s.params.gpu), gpu->download(s.m.gpu), gpu->download(s.v.gpu)};
    step(*cpu, s, true, true, segments, hp);
    step(*gpu, s, false, true, segments, hp);
    expect_untouched(s, before, "NaN loss");
    const std::vector<double> sg = gpu->download(s.status.gpu), sc = cpu->download(s.status.cpu);
    EXPECT_EQ(sg[kStepApplied], 0.0);
    EXPECT_NEAR(sg[kStepGradNorm], sc[kStepGradNorm], 1e-10 * sc[kStepGradNorm]) << "the norm is still reported";
  }
  {  // A non-finite gradient.
    FlatState s = state(n, 0, 1.0, 1410);
    std::vector<double> g = cpu->download(s.grads.cpu);
    g[17] = INFINITY;
    s.grads = pair({n}, DType::f32, g);
    const std::vector<double> before[3] = {gpu->download(s.params.gpu), gpu->download(s.m.gpu), gpu->download(s.v.gpu)};
    step(*gpu, s, false, true, segments, hp);
    expect_untouched(s, before, "infinite gradient");
    const std::vector<double> sg = gpu->download(s.status.gpu);
    EXPECT_EQ(sg[kStepApplied], 0.0);
    EXPECT_TRUE(std::isinf(sg[kStepGradNorm]));
  }
  {  // A quantizer met a non-finite input: the step skips and takes the record into its status
     // (where describe_non_finite_input reads it); the next step decides on its own inputs.
    FlatState s = state(n, 0, 1.0, 1420);
    std::vector<double> x = random_values(64 * 64, 1421);
    x[100] = NAN;
    auto input = pair({64, 64}, DType::bf16, x);
    gpu->quantize(input.gpu, false, QuantizerSpec::defaults(QuantizerKind::rtn), Rotation::none(), RandomContext{1, 1, 1});
    const std::vector<double> before[3] = {gpu->download(s.params.gpu), gpu->download(s.m.gpu), gpu->download(s.v.gpu)};
    step(*gpu, s, false, true, segments, hp);
    expect_untouched(s, before, "non-finite quantizer input");
    std::vector<double> sg = gpu->download(s.status.gpu);
    EXPECT_EQ(sg[kStepApplied], 0.0);
    EXPECT_EQ(sg[kStepNonFiniteInput], 1.0);
    // Element 100 of the 64 x 64 input is row 1, column 36.
    EXPECT_EQ(gpu->describe_non_finite_input(sg[kStepNonFiniteKey]),
              "quantize: input element (1, 36) of the 64 x 64 tensor is not finite; quantizers need finite values");
    EXPECT_NO_THROW(gpu->raise_pending_errors()) << "the step took the record";
    step(*cpu, s, true, true, segments, hp);
    step(*gpu, s, false, true, segments, hp);
    sg = gpu->download(s.status.gpu);
    EXPECT_EQ(sg[kStepApplied], 1.0) << "the next step applies";
    EXPECT_EQ(sg[kStepNonFiniteInput], 0.0);
    EXPECT_EQ(sg[kStepNonFiniteKey], 0.0);
    expect_same_state(s, "adamw after a step that skipped for a non-finite input");
  }
}

// The sharded optimizer's halves (train/sharded_optimizer.cpp): gradient_squares then
// adamw_update on the same arguments are adamw_step bit for bit: parameters, moments, the BF16
// copy and every status slot, at sizes from one element to several 16384-element chunks with
// ragged ends, clipped and not, on a step that applies and on one that skips (a NaN loss).
TEST_F(CudaAdamW, HalvesAreTheWholeStepBitForBit) {
  std::uint64_t seed = 1500;
  for (const std::int64_t n : {std::int64_t{1}, std::int64_t{4099}, std::int64_t{100003}, std::int64_t{(1 << 20) + 7}}) {
    const std::vector<ParameterSegment> segments = {{0, (n + 1) / 2, true}, {(n + 1) / 2, n / 2, false}};
    for (const double max_grad_norm : {1e9, 0.05}) {
      for (const double loss : {2.5, double(NAN)}) {
        const std::string what = std::to_string(n) + " elements" + (max_grad_norm < 1 ? ", clipped" : "") +
                                 (std::isnan(loss) ? ", NaN loss (skips)" : "");
        seed += 10;
        FlatState whole = state(n, 0, loss, seed), halves = state(n, 0, loss, seed);
        const AdamWStep hp{3e-4, 0.9, 0.95, 1e-8, 0.1, 7, max_grad_norm};
        step(*gpu, whole, false, true, segments, hp);
        gpu->gradient_squares(halves.grads.gpu, segments, halves.status.gpu);
        gpu->adamw_update(halves.params.gpu, halves.params_bf16.gpu, halves.grads.gpu, halves.m.gpu, halves.v.gpu,
                          segments, hp, halves.status.gpu);
        expect_identical(gpu->download(halves.params.gpu), gpu->download(whole.params.gpu), what + ": parameters");
        expect_identical(gpu->download(halves.m.gpu), gpu->download(whole.m.gpu), what + ": first moments");
        expect_identical(gpu->download(halves.v.gpu), gpu->download(whole.v.gpu), what + ": second moments");
        expect_identical(gpu->download(halves.params_bf16.gpu), gpu->download(whole.params_bf16.gpu),
                         what + ": BF16 parameters");
        const std::vector<double> sh = gpu->download(halves.status.gpu), sw = gpu->download(whole.status.gpu);
        for (int slot = 0; slot < kStepSlots; ++slot) {
          EXPECT_EQ(std::bit_cast<std::uint64_t>(sh[slot]), std::bit_cast<std::uint64_t>(sw[slot]))
              << what << ": status slot " << slot << " (" << sh[slot] << " vs " << sw[slot] << ")";
        }
        EXPECT_EQ(sw[kStepApplied], std::isnan(loss) ? 0.0 : 1.0) << what;
      }
    }
  }
}

}  // namespace
}  // namespace quartet

// The operation table (op_cases.h): inputs, costs and tolerances of every Backend operation.
//
// u below is FP32's unit roundoff, 2^-24. A sum of k terms in FP32 is within about k u sum|terms|
// of the exact sum whatever the order; two implementations that sum in different orders are
// therefore within 2 k u sum|terms| of each other. Where the result is then stored in BF16, a
// tiny difference before the rounding may still flip it: one BF16 ulp of the value.
#include "bench/op_cases.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <numbers>

#include "quartet/error.h"
#include "quartet/nn/llama.h"
#include "quartet/numerics/bf16.h"

namespace quartet::ops {

namespace {

constexpr double kU = 0x1p-24;  // FP32 unit roundoff
constexpr double kRmsEps = 1e-5;

// ---------------------------------------------------------------------------------------------
// Random values: counter-based (splitmix64 of the element index within a per-tensor stream), so
// a tensor's values depend only on the seed, its name and its size, and they can be generated in
// parallel for the benchmark's billion-element buffers.

std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

std::uint64_t fnv1a(const std::string& s) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

// Uniform on the open interval (0, 1).
double unit_interval(std::uint64_t stream, std::uint64_t i) {
  return (static_cast<double>(splitmix64(stream + splitmix64(i)) >> 11) + 0.5) * 0x1p-53;
}

double standard_normal(std::uint64_t stream, std::uint64_t i) {  // Box-Muller
  const double radius = std::sqrt(-2.0 * std::log(unit_interval(stream, 2 * i)));
  return radius * std::cos(2.0 * std::numbers::pi * unit_interval(stream, 2 * i + 1));
}

template <class F>
std::vector<double> per_element(std::int64_t count, const F& f) {
  std::vector<double> v(static_cast<std::size_t>(count));
#pragma omp parallel for schedule(static) if (count >= (std::int64_t{1} << 16))
  for (std::int64_t i = 0; i < count; ++i) v[static_cast<std::size_t>(i)] = f(static_cast<std::uint64_t>(i));
  return v;
}

double round_to(DType dtype, double v) {
  switch (dtype) {
    case DType::bf16: return static_cast<double>(round_to_bf16(static_cast<float>(v)));
    case DType::f32: return static_cast<double>(static_cast<float>(v));
    default: return v;
  }
}

// The spacing of BF16 values at |x| (8 significant bits), at least the smallest subnormal.
double bf16_ulp(double x) {
  if (!std::isfinite(x) || x == 0.0) return 0x1p-133;
  return std::max(std::ldexp(1.0, std::ilogb(x) - 7), 0x1p-133);
}

bool same_bits(double a, double b) {
  if (std::isnan(a) && std::isnan(b)) return true;
  return std::memcmp(&a, &b, sizeof(double)) == 0;
}

// ---------------------------------------------------------------------------------------------
// Shapes.

struct ModelSize {
  const char* label;
  std::int64_t batch, seq, d, ffn, heads, kv_heads, head_dim, layers, vocab;
  std::int64_t tokens() const { return batch * seq; }
  std::int64_t qkv_width() const { return (heads + 2 * kv_heads) * head_dim; }
};

// The benchmark's two model sizes: the "124m" and "1b" presets (llama_preset) with the GPT-2
// vocabulary, at the training benchmark's batches of 8 x 1024 and 8 x 2048 tokens.
ModelSize preset_size(const char* label, std::int64_t seq) {
  const LlamaConfig c = llama_preset(label, 50257);
  return {label, 8, seq, c.d_model, c.ffn(), c.n_heads, c.n_kv_heads, c.head_dim(), c.n_layers, c.vocab_size};
}

const std::vector<ModelSize>& model_sizes() {
  static const std::vector<ModelSize> sizes = {preset_size("124m", 1024), preset_size("1b", 2048)};
  return sizes;
}

OpShape rows_cols(std::string label, std::int64_t rows, std::int64_t cols, DType dtype = DType::bf16) {
  OpShape s;
  s.label = std::move(label);
  s.dtype = dtype;
  s.rows = rows;
  s.cols = cols;
  return s;
}

OpShape with_vocab(std::string label, std::int64_t rows, std::int64_t vocab, std::int64_t cols = 0) {
  OpShape s = rows_cols(std::move(label), rows, cols);
  s.vocab = vocab;
  return s;
}

OpShape flat(std::string label, std::int64_t elements, DType dtype) { return rows_cols(std::move(label), elements, 0, dtype); }

OpShape attention_case(std::string label, std::int64_t batch, std::int64_t seq, std::int64_t heads,
                       std::int64_t kv_heads, std::int64_t head_dim) {
  OpShape s;
  s.label = std::move(label);
  s.attention = AttentionShape{batch, seq, heads, kv_heads, head_dim};
  return s;
}

OpShape gemm_shape(std::string label, GemmShape g, DType out_dtype) {
  OpShape s;
  s.label = std::move(label);
  s.dtype = out_dtype;
  s.gemm = g;
  return s;
}

OpShape adamw_shape(std::string label, std::int64_t elements, std::vector<ParameterSegment> segments, double scale = 1.0,
                    bool finite_loss = true) {
  OpShape s = flat(std::move(label), elements, DType::f32);
  s.segments = std::move(segments);
  s.scale = scale;
  s.finite_loss = finite_loss;
  return s;
}

// The flat parameter buffer of a model, one segment per tensor in the model's order; norms and
// the embedding without weight decay.
std::vector<ParameterSegment> model_segments(const ModelSize& m) {
  std::vector<ParameterSegment> segments;
  std::int64_t offset = 0;
  const auto add = [&](std::int64_t count, bool decay) {
    segments.push_back({offset, count, decay});
    offset += count;
  };
  add(m.vocab * m.d, false);
  for (std::int64_t i = 0; i < m.layers; ++i) {
    add(m.d, false);
    add(m.qkv_width() * m.d, true);
    add(m.d * m.heads * m.head_dim, true);
    add(m.d, false);
    add(2 * m.ffn * m.d, true);
    add(m.ffn * m.d, true);
  }
  add(m.d, false);
  add(m.vocab * m.d, true);
  return segments;
}

std::int64_t segment_elements(const std::vector<ParameterSegment>& segments) {
  std::int64_t n = 0;
  for (const ParameterSegment& s : segments) n += s.count;
  return n;
}

template <class F>
std::vector<OpShape> per_model(const F& shape_of) {
  std::vector<OpShape> shapes;
  for (const ModelSize& m : model_sizes()) shapes.push_back(shape_of(m));
  return shapes;
}

// ---------------------------------------------------------------------------------------------
// Building blocks of the builders.

double dsize(DType dtype) { return static_cast<double>(dtype_size(dtype)); }

OpOutput tensor_output(Backend& be, std::string name, const Tensor& t, Tolerance tolerance) {
  return {std::move(name), [&be, t] { return be.download(t); }, std::move(tolerance)};
}

// ---- embedding ----

// A row gather: FP32 table rows stored as BF16, one rounding of the same value on either side.
OpRun build_embedding_forward(Backend& be, const OpShape& s, CaseInputs& in) {
  Tensor tokens = in.tensor(be, "tokens", {s.rows}, DType::i32, token_values(s.vocab, 0));
  Tensor table = in.tensor(be, "table", {s.vocab, s.cols}, DType::f32, normal_values(1.0));
  Tensor out = be.empty({s.rows, s.cols}, on_backend(be, s.dtype));
  return {[&be, out, tokens, table]() mutable { be.embedding_forward(out, tokens, table); },
          {tensor_output(be, "out", out, bitwise())}};
}

OpCost embedding_forward_cost(const OpShape& s) {
  const double n = static_cast<double>(s.rows), c = static_cast<double>(s.cols);
  return {4 * n + n * c * (4 + dsize(s.dtype)), 0};
}

// dtable[token] += dout[row] in position order on both sides (the contract): the same FP32
// additions in the same order, so the same bits. The table starts from random values so that
// an implementation that overwrites, or adds its rows' sum at once, shows.
OpRun build_embedding_backward(Backend& be, const OpShape& s, CaseInputs& in) {
  Tensor tokens = in.tensor(be, "tokens", {s.rows}, DType::i32, token_values(s.vocab, 0));
  Tensor dout = in.tensor(be, "dout", {s.rows, s.cols}, s.dtype, normal_values(1.0));
  Tensor dtable = in.tensor(be, "dtable", {s.vocab, s.cols}, DType::f32, normal_values(1.0));
  return {[&be, dtable, tokens, dout]() mutable { be.embedding_backward(dtable, tokens, dout); },
          {tensor_output(be, "dtable", dtable, bitwise())}};
}

// The table rows that uniform random tokens touch: v (1 - (1 - 1/v)^n) distinct rows, each read
// and written once.
OpCost embedding_backward_cost(const OpShape& s) {
  const double n = static_cast<double>(s.rows), c = static_cast<double>(s.cols), v = static_cast<double>(s.vocab);
  const double distinct = -v * std::expm1(n * std::log1p(-1.0 / v));
  return {4 * n + n * c * dsize(s.dtype) + 8 * distinct * c, 0};
}

// ---- RMSNorm ----

// rstd = 1 / sqrt(mean x^2 + eps): the c squares of BF16 values are exact in FP32, their sums in
// two orders within 2 (c - 1) u relative of each other, halved by the square root; the mean,
// eps, the square root and the reciprocal (or an rsqrt of a couple of ulps) add a few roundings
// per side: (c + 8) u relative.
double rstd_relative(std::int64_t cols) { return (static_cast<double>(cols) + 8) * kU; }

// out = x rstd w: rstd's relative difference and two more roundings, before the one BF16
// rounding that it may flip: one BF16 ulp plus that relative difference.
Tolerance norm_output_tolerance(std::int64_t cols) { return within(1, rstd_relative(cols) + 4 * kU); }

OpRun build_rmsnorm_forward(Backend& be, const OpShape& s, CaseInputs& in) {
  Tensor x = in.tensor(be, "x", {s.rows, s.cols}, s.dtype, normal_values(1.0));
  Tensor weight = in.tensor(be, "weight", {s.cols}, DType::f32, normal_values(1.0));
  Tensor out = be.empty({s.rows, s.cols}, on_backend(be, s.dtype));
  Tensor rstd = be.empty({s.rows}, be.param_dtype());
  return {[&be, out, rstd, x, weight]() mutable { be.rmsnorm_forward(out, rstd, x, weight, kRmsEps); },
          {tensor_output(be, "out", out, norm_output_tolerance(s.cols)),
           tensor_output(be, "rstd", rstd, within(0, rstd_relative(s.cols)))}};
}

OpCost rmsnorm_forward_cost(const OpShape& s) {
  const double n = static_cast<double>(s.rows), c = static_cast<double>(s.cols);
  return {2 * n * c * dsize(s.dtype) + 4 * c + 4 * n, 0};
}

// sum = x + y is one FP32 addition of two BF16 values (exact, or off by far less than a BF16
// ulp) and one rounding to BF16: the same bits on both sides.
OpRun build_residual_rmsnorm_forward(Backend& be, const OpShape& s, CaseInputs& in) {
  Tensor x = in.tensor(be, "x", {s.rows, s.cols}, s.dtype, normal_values(1.0));
  Tensor y = in.tensor(be, "y", {s.rows, s.cols}, s.dtype, normal_values(1.0));
  Tensor weight = in.tensor(be, "weight", {s.cols}, DType::f32, normal_values(1.0));
  Tensor sum = be.empty({s.rows, s.cols}, on_backend(be, s.dtype));
  Tensor out = be.empty({s.rows, s.cols}, on_backend(be, s.dtype));
  Tensor rstd = be.empty({s.rows}, be.param_dtype());
  return {[&be, sum, out, rstd, x, y, weight]() mutable {
            be.residual_rmsnorm_forward(sum, out, rstd, x, y, weight, kRmsEps);
          },
          {tensor_output(be, "sum", sum, bitwise()), tensor_output(be, "out", out, norm_output_tolerance(s.cols)),
           tensor_output(be, "rstd", rstd, within(0, rstd_relative(s.cols)))}};
}

OpCost residual_rmsnorm_forward_cost(const OpShape& s) {
  const double n = static_cast<double>(s.rows), c = static_cast<double>(s.cols);
  return {4 * n * c * dsize(s.dtype) + 4 * c + 4 * n, 0};
}

// dx = s dy w - x s^3 dot / c with dot = sum_j dy w x over the row, and dweight += sum over the
// rows of dy x s. The bounds, per element, from the inputs:
//  * dot: c products of two roundings each, summed in another order: 2 (c + 2) u sum|dy w x|,
//    times |x| s^3 / c in dx; each side's few roundings of the two terms, 8 u (|s dy w| +
//    |x coef|); the accumulated dx's addition, 2 u |dx|; then one BF16 rounding: one ulp;
//  * dweight (FP32, no BF16 rounding): n + 1 terms (the starting value and one product of two
//    roundings per row) summed in another order: 2 (n + 3) u (|dweight| + sum |dy x s|).
struct RmsNormBackwardBounds {
  std::vector<double> dx, dweight;
};

RmsNormBackwardBounds rmsnorm_backward_bounds(const std::vector<double>& dout, const std::vector<double>& x,
                                              const std::vector<double>& weight, const std::vector<double>& rstd,
                                              const std::vector<double>& dx_start, const std::vector<double>& dweight_start,
                                              std::int64_t rows, std::int64_t cols) {
  RmsNormBackwardBounds b{std::vector<double>(x.size()), std::vector<double>(weight.size(), 0.0)};
  std::vector<double> weight_terms(weight.size(), 0.0);
  for (std::int64_t i = 0; i < rows; ++i) {
    const double s = rstd[static_cast<std::size_t>(i)];
    double dot = 0, dot_abs = 0;
    for (std::int64_t j = 0; j < cols; ++j) {
      const std::size_t e = static_cast<std::size_t>(i * cols + j);
      dot += dout[e] * weight[static_cast<std::size_t>(j)] * x[e];
      dot_abs += std::fabs(dout[e] * weight[static_cast<std::size_t>(j)] * x[e]);
      weight_terms[static_cast<std::size_t>(j)] += std::fabs(dout[e] * x[e] * s);
    }
    const double coef = s * s * s * dot / static_cast<double>(cols);
    const double dot_bound = 2.0 * (static_cast<double>(cols) + 2) * kU * dot_abs;
    for (std::int64_t j = 0; j < cols; ++j) {
      const std::size_t e = static_cast<std::size_t>(i * cols + j);
      const double start = dx_start.empty() ? 0.0 : std::fabs(dx_start[e]);
      b.dx[e] = std::fabs(x[e]) * s * s * s / static_cast<double>(cols) * dot_bound +
                8 * kU * (std::fabs(s * dout[e] * weight[static_cast<std::size_t>(j)]) + std::fabs(x[e] * coef)) +
                2 * kU * start;
    }
  }
  for (std::size_t j = 0; j < weight.size(); ++j) {
    b.dweight[j] = 2.0 * (static_cast<double>(rows) + 3) * kU * (std::fabs(dweight_start[j]) + weight_terms[j]);
  }
  return b;
}

// rstd is an input computed on the host from x (in double, stored as FP32), so both backends
// differentiate from the same rstd; dweight starts from random values (it accumulates).
OpRun build_rmsnorm_backward(Backend& be, const OpShape& s, CaseInputs& in, bool accumulate_dx) {
  const std::int64_t n = s.rows, c = s.cols;
  const Generator x_values = normal_values(1.0);
  const std::vector<double> xv = in.values("x", n * c, s.dtype, x_values);
  const Generator rstd_values = [xv, n, c](std::uint64_t, std::int64_t) {
    std::vector<double> r(static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; ++i) {
      double ss = 0;
      for (std::int64_t j = 0; j < c; ++j) ss += xv[static_cast<std::size_t>(i * c + j)] * xv[static_cast<std::size_t>(i * c + j)];
      r[static_cast<std::size_t>(i)] = 1.0 / std::sqrt(ss / static_cast<double>(c) + kRmsEps);
    }
    return r;
  };
  Tensor x = in.tensor(be, "x", {n, c}, s.dtype, x_values);
  Tensor rstd = in.tensor(be, "rstd", {n}, DType::f32, rstd_values);
  Tensor dout = in.tensor(be, "dout", {n, c}, s.dtype, normal_values(1.0));
  Tensor weight = in.tensor(be, "weight", {c}, DType::f32, normal_values(1.0));
  Tensor dweight = in.tensor(be, "dweight", {c}, DType::f32, normal_values(1.0));
  Tensor dx = accumulate_dx ? in.tensor(be, "dx", {n, c}, s.dtype, normal_values(1.0)) : be.empty({n, c}, on_backend(be, s.dtype));

  Tolerance dx_tolerance = within(1, 0), dweight_tolerance = within(0, 0);
  if (in.for_comparison()) {
    const std::vector<double> no_start;
    RmsNormBackwardBounds b = rmsnorm_backward_bounds(
        in.values("dout", n * c, s.dtype, normal_values(1.0)), xv, in.values("weight", c, DType::f32, normal_values(1.0)),
        in.values("rstd", n, DType::f32, rstd_values),
        accumulate_dx ? in.values("dx", n * c, s.dtype, normal_values(1.0)) : no_start,
        in.values("dweight", c, DType::f32, normal_values(1.0)), n, c);
    dx_tolerance = within(1, 0, 0, std::move(b.dx));
    dweight_tolerance = within(0, 0, 0, std::move(b.dweight));
  }
  return {[&be, dx, dweight, dout, x, weight, rstd, accumulate_dx]() mutable {
            be.rmsnorm_backward(dx, dweight, dout, x, weight, rstd, accumulate_dx);
          },
          {tensor_output(be, "dx", dx, std::move(dx_tolerance)),
           tensor_output(be, "dweight", dweight, std::move(dweight_tolerance))}};
}

OpCost rmsnorm_backward_cost(const OpShape& s, bool accumulate_dx) {
  const double n = static_cast<double>(s.rows), c = static_cast<double>(s.cols);
  return {(accumulate_dx ? 4 : 3) * n * c * dsize(s.dtype) + 4 * c + 4 * n + 8 * c, 0};
}

// ---- SwiGLU ----

// silu(g) u = g / (1 + exp(-g)) u in FP32: the GPU's expf (or __expf, within a few ulps for
// the |g| < 16 of these inputs) and its order of the operations give a value a few FP32 ulps
// away (2^-18 relative), whose one BF16 rounding may flip: one BF16 ulp plus 2^-18 relative.
// Backward also has 1 + g (1 - sigmoid(g)), which cancels near g = -1.28: there the difference
// is a few FP32 ulps of the terms, absolute, covered by a floor of 2^-20 max|dgate_up|.
constexpr double kSwigluRelative = 0x1p-18;
constexpr double kSwigluFloor = 0x1p-20;

OpRun build_swiglu_forward(Backend& be, const OpShape& s, CaseInputs& in) {
  Tensor gate_up = in.tensor(be, "gate_up", {s.rows, 2 * s.cols}, s.dtype, normal_values(2.0));
  Tensor out = be.empty({s.rows, s.cols}, on_backend(be, s.dtype));
  return {[&be, out, gate_up]() mutable { be.swiglu_forward(out, gate_up); },
          {tensor_output(be, "out", out, within(1, kSwigluRelative))}};
}

OpRun build_swiglu_backward(Backend& be, const OpShape& s, CaseInputs& in) {
  Tensor gate_up = in.tensor(be, "gate_up", {s.rows, 2 * s.cols}, s.dtype, normal_values(2.0));
  Tensor dout = in.tensor(be, "dout", {s.rows, s.cols}, s.dtype, normal_values(1.0));
  Tensor dgate_up = be.empty({s.rows, 2 * s.cols}, on_backend(be, s.dtype));
  return {[&be, dgate_up, dout, gate_up]() mutable { be.swiglu_backward(dgate_up, dout, gate_up); },
          {tensor_output(be, "dgate_up", dgate_up, within(1, kSwigluRelative, kSwigluFloor))}};
}

OpCost swiglu_forward_cost(const OpShape& s) {
  return {3 * static_cast<double>(s.rows) * static_cast<double>(s.cols) * dsize(s.dtype), 0};
}

OpCost swiglu_backward_cost(const OpShape& s) {
  return {5 * static_cast<double>(s.rows) * static_cast<double>(s.cols) * dsize(s.dtype), 0};
}

// ---- add ----

// One FP32 addition (exact for two BF16 values but for far-apart exponents) and one rounding
// to the stored dtype: the same bits on both sides.
OpRun build_add_inplace(Backend& be, const OpShape& s, CaseInputs& in) {
  Tensor a = in.tensor(be, "a", {s.rows, s.cols}, s.dtype, normal_values(1.0));
  Tensor b = in.tensor(be, "b", {s.rows, s.cols}, s.dtype, normal_values(1.0));
  return {[&be, a, b]() mutable { be.add_inplace(a, b); }, {tensor_output(be, "a", a, bitwise())}};
}

OpCost add_inplace_cost(const OpShape& s) {
  return {3 * static_cast<double>(s.rows) * static_cast<double>(s.cols) * dsize(s.dtype), 0};
}

// ---- cross-entropy ----

// In place, as the model calls it: dlogits is the logits tensor. The test shapes mask rows 1, 4,
// 7, ... (target -1); the loss adds to a preset sum.
//  * dlogits = (softmax - onehot) scale: the CPU takes the exps and the log-sum-exp in double,
//    the GPU in FP32 over v terms in its own order; the probabilities agree to a few 2^-20
//    relative, before one BF16 rounding: one BF16 ulp plus 2^-16 relative. The target's p - 1
//    cancels where p is near 1, leaving an FP32 ulp absolute: a floor of 2^-20 max|dlogits|.
//  * loss: a sum of per-row losses (about log v each) in double on the CPU, from FP32
//    log-sum-exps on the GPU: each row's loss within 2e-5 (about 100 FP32 roundings of the
//    row's sum: tests/cuda/model_ops_test.cpp derives it), so 2e-5 per row absolute.
OpRun build_cross_entropy(Backend& be, const OpShape& s, CaseInputs& in) {
  Tensor logits = in.tensor(be, "logits", {s.rows, s.vocab}, s.dtype, normal_values(2.0));
  Tensor targets = in.tensor(be, "targets", {s.rows}, DType::i32, token_values(s.vocab, s.mask_every));
  Tensor loss_sum = in.tensor(be, "loss_sum", {1}, DType::f64, fixed_values({0.75}), true);
  const std::int64_t masked = s.mask_every > 0 && s.rows > 1 ? (s.rows - 2) / s.mask_every + 1 : 0;
  const double grad_scale = 1.0 / static_cast<double>(s.rows - masked);
  return {[&be, logits, targets, loss_sum, grad_scale]() mutable {
            be.cross_entropy(logits, logits, targets, logits.dim(1), grad_scale, loss_sum);
          },
          {tensor_output(be, "dlogits", logits, within(1, 0x1p-16, 0x1p-20)),
           tensor_output(be, "loss_sum", loss_sum,
                         within(0, 0, 0, {2e-5 * static_cast<double>(s.rows - masked)}))}};
}

OpCost cross_entropy_cost(const OpShape& s) {
  const double n = static_cast<double>(s.rows), v = static_cast<double>(s.vocab);
  return {2 * n * v * dsize(s.dtype) + 4 * n + 16, 0};
}

// ---- attention ----

// The GPU runs flash attention on BF16 tensor cores: the rotated q and k and the softmax
// probabilities are rounded to BF16 inside the kernel, where the CPU keeps FP32, so the two
// are not within a fixed number of ulps of each other. Both are compared with the FP64
// reference backend instead (the same BF16 inputs, no rounding anywhere), as the FlashAttention
// project tests its kernels against a reference: the GPU's largest error may be at most 4 times
// the CPU FP32 backend's largest error (which is mostly the BF16 rounding of the output: the
// kernels' roundings of q, k and the probabilities each cost about as much), plus one BF16
// rounding (2^-9) of the largest output. tests/cuda/attention_test.cpp uses the same bound.
Tolerance attention_tolerance() { return versus_reference(4.0, 0x1p-9); }

OpRun build_attention_forward(Backend& be, const OpShape& s, CaseInputs& in) {
  const AttentionShape& a = s.attention;
  Tensor qkv = in.tensor(be, "qkv", {a.tokens(), a.qkv_width()}, s.dtype, normal_values(1.0));
  Tensor out = be.empty({a.tokens(), a.q_width()}, on_backend(be, s.dtype));
  auto saved = std::make_shared<AttentionSaved>();
  return {[&be, out, saved, qkv, a]() mutable { be.attention_forward(out, *saved, qkv, a); },
          {tensor_output(be, "out", out, attention_tolerance())}};
}

// The forward pass runs once while building (it is not timed); its output stays alive with
// the case, since a GPU's saved state may refer to it.
OpRun build_attention_backward(Backend& be, const OpShape& s, CaseInputs& in) {
  const AttentionShape& a = s.attention;
  Tensor qkv = in.tensor(be, "qkv", {a.tokens(), a.qkv_width()}, s.dtype, normal_values(1.0));
  Tensor dout = in.tensor(be, "dout", {a.tokens(), a.q_width()}, s.dtype, normal_values(1.0));
  Tensor out = be.empty({a.tokens(), a.q_width()}, on_backend(be, s.dtype));
  AttentionSaved saved;
  be.attention_forward(out, saved, qkv, a);
  Tensor dqkv = be.empty({a.tokens(), a.qkv_width()}, on_backend(be, s.dtype));
  return {[&be, dqkv, dout, qkv, saved, forward_out = out, a]() mutable {
            static_cast<void>(forward_out);
            be.attention_backward(dqkv, dout, qkv, saved, a);
          },
          {tensor_output(be, "dqkv", dqkv, attention_tolerance())}};
}

// Causal attention: S = Q K^T and O = P V over the T^2 / 2 (query, key) pairs at or below the
// diagonal, 2 FLOPs per multiply-add: 2 * 2 * B * H * T^2 / 2 * hd = 2 B H T^2 hd (the
// non-causal 4 B H T^2 hd halved). The backward does five such products (S recomputed, dV,
// dP, dQ, dK): 2.5 times the forward.
double attention_forward_flops(const AttentionShape& a) {
  const double t = static_cast<double>(a.seq);
  return 4.0 * static_cast<double>(a.batch) * static_cast<double>(a.heads) * t * t * static_cast<double>(a.head_dim) / 2.0;
}

OpCost attention_forward_cost(const OpShape& s) {
  const AttentionShape& a = s.attention;
  const double bytes = static_cast<double>(a.tokens()) * static_cast<double>(a.qkv_width() + a.q_width()) * dsize(s.dtype);
  return {bytes, attention_forward_flops(a)};
}

OpCost attention_backward_cost(const OpShape& s) {
  const AttentionShape& a = s.attention;
  const double bytes =
      static_cast<double>(a.tokens()) * static_cast<double>(2 * a.qkv_width() + 2 * a.q_width()) * dsize(s.dtype);
  return {bytes, 2.5 * attention_forward_flops(a)};
}

// ---- GEMM ----

// BF16 operands, FP32 accumulation: the k products are exact in FP32 and each side's sum is
// within (k + 1) u sum|a b| of the exact one (the starting value of an accumulating GEMM
// counted as one more term), so the two differ by at most 2 (k + 1) u (|out| + sum|a b|) per
// element: the bound of HighPrecisionGemmEveryTransposition (cuda_backend_test.cpp), worked
// out per element instead of bounding |a b| by 16. A BF16 output adds one BF16 ulp.
std::vector<double> gemm_element_bound(const GemmShape& g, const std::vector<double>& a, const std::vector<double>& b,
                                       const std::vector<double>& start) {
  std::vector<double> bound(static_cast<std::size_t>(g.m * g.n));
  for (std::int64_t i = 0; i < g.m; ++i) {
    for (std::int64_t j = 0; j < g.n; ++j) {
      double sum = start.empty() ? 0.0 : std::fabs(start[static_cast<std::size_t>(i * g.n + j)]);
      for (std::int64_t p = 0; p < g.k; ++p) {
        const double av = a[static_cast<std::size_t>(g.a_transposed ? p * g.m + i : i * g.k + p)];
        const double bv = b[static_cast<std::size_t>(g.b_transposed ? p * g.n + j : j * g.k + p)];
        sum += std::fabs(av * bv);
      }
      bound[static_cast<std::size_t>(i * g.n + j)] = 2.0 * (static_cast<double>(g.k) + 1) * kU * sum;
    }
  }
  return bound;
}

OpRun build_gemm(Backend& be, const OpShape& s, CaseInputs& in) {
  const GemmShape& g = s.gemm;
  const Shape a_shape = g.a_transposed ? Shape{g.k, g.m} : Shape{g.m, g.k};
  const Shape b_shape = g.b_transposed ? Shape{g.k, g.n} : Shape{g.n, g.k};
  Tensor a = in.tensor(be, "a", a_shape, DType::bf16, normal_values(1.0));
  Tensor b = in.tensor(be, "b", b_shape, DType::bf16, normal_values(1.0));
  Tensor out = g.accumulate ? in.tensor(be, "out", {g.m, g.n}, s.dtype, normal_values(1.0))
                            : be.empty({g.m, g.n}, on_backend(be, s.dtype));
  Tolerance tolerance = within(s.dtype == DType::bf16 ? 1 : 0, 0);
  if (in.for_comparison()) {
    const std::vector<double> no_start;
    tolerance.element_bound = gemm_element_bound(
        g, in.values("a", shape_numel(a_shape), DType::bf16, normal_values(1.0)),
        in.values("b", shape_numel(b_shape), DType::bf16, normal_values(1.0)),
        g.accumulate ? in.values("out", g.m * g.n, s.dtype, normal_values(1.0)) : no_start);
  }
  return {[&be, out, a, b, g]() mutable { be.gemm(out, a, g.a_transposed, b, g.b_transposed, g.accumulate); },
          {tensor_output(be, "out", out, std::move(tolerance))}};
}

OpCost gemm_cost(const OpShape& s) {
  const GemmShape& g = s.gemm;
  const double m = static_cast<double>(g.m), n = static_cast<double>(g.n), k = static_cast<double>(g.k);
  return {(m * k + n * k) * 2 + m * n * dsize(s.dtype) * (g.accumulate ? 2 : 1), 2 * m * n * k};
}

// The three GEMMs of a linear layer y = x W^T ([tokens, in] x [out, in]) as the model runs
// them: forward (BF16 out), the input gradient dx = dy W (B transposed, BF16 out) and the
// weight gradient dW += dy^T x (both transposed, FP32, accumulating). (The LM head's forward
// and input gradient take BF16 logits; its weight gradient accumulates in FP32 like the others.)
std::vector<OpShape> linear_layer_gemms(const ModelSize& m) {
  const struct {
    const char* name;
    std::int64_t in, out;
  } layers[] = {{"qkv", m.d, m.qkv_width()},
                {"o", m.heads * m.head_dim, m.d},
                {"gate_up", m.d, 2 * m.ffn},
                {"down", m.ffn, m.d},
                // the model pads the vocabulary to a multiple of 128 on the GPU (aligned rows for
                // cuBLASLt's TMA kernels); the unpadded GEMMs are kept to show why
                {"lm_head", m.d, (m.vocab + 127) / 128 * 128},
                {"lm_head_unpadded", m.d, m.vocab}};
  std::vector<OpShape> shapes;
  const std::int64_t t = m.tokens();
  for (const auto& l : layers) {
    const std::string prefix = fmt::format("{}_{}_", m.label, l.name);
    shapes.push_back(gemm_shape(prefix + "fwd", {t, l.out, l.in, false, false, false}, DType::bf16));
    shapes.push_back(gemm_shape(prefix + "dgrad", {t, l.in, l.out, false, true, false}, DType::bf16));
    shapes.push_back(gemm_shape(prefix + "wgrad", {l.out, l.in, t, true, true, true}, DType::f32));
  }
  return shapes;
}

// ---- optimizer ----

// The GPU runs the contract's unfused FP32 operations in the CPU's order on the same inputs:
// parameters, moments and the BF16 copy are the same bits. (The clipping factor
// float(max_norm / norm) is the same float unless the two double norms, summed in different
// orders, straddle a float rounding boundary: far rarer than these tests could meet.) The
// status holds the gradient norm, a double sum in another order: 1e-6 relative.
OpRun build_adamw_step(Backend& be, const OpShape& s, CaseInputs& in) {
  const std::int64_t n = s.rows;
  Tensor params = in.tensor(be, "params", {n}, DType::f32, normal_values(1.0));
  Tensor grads = in.tensor(be, "grads", {n}, DType::f32, normal_values(s.scale));
  Tensor m = in.tensor(be, "m", {n}, DType::f32, normal_values(0.1 * s.scale));
  Tensor v = in.tensor(be, "v", {n}, DType::f32, squared_values(0.1 * s.scale));
  // Values outside the segments must stay as they were: start the copy from random ones.
  Tensor params_bf16 = in.tensor(be, "params_bf16", {n}, DType::bf16, normal_values(1.0), true);
  Tensor status = in.tensor(be, "status", {kStepSlots}, DType::f64,
                            fixed_values({s.finite_loss ? 2.5 : std::nan(""), 0.0, 0.0, 0.0, 0.0}), true);
  AdamWStep hp;
  hp.lr = 1e-2;
  hp.weight_decay = 0.1;
  hp.step = 7;
  hp.max_grad_norm = 1.0;
  const std::vector<ParameterSegment> segments = s.segments;
  return {[&be, params, params_bf16, grads, m, v, segments, hp, status]() mutable {
            be.adamw_step(params, params_bf16, grads, m, v, segments, hp, status);
          },
          {tensor_output(be, "params", params, bitwise()), tensor_output(be, "m", m, bitwise()),
           tensor_output(be, "v", v, bitwise()), tensor_output(be, "params_bf16", params_bf16, bitwise()),
           tensor_output(be, "status", status, within(0, 1e-6))}};
}

// Per element in the segments: the gradient read twice (the norm must be known before any
// element is updated), the parameter and both moments read and written, the BF16 copy written.
OpCost adamw_step_cost(const OpShape& s) { return {static_cast<double>(segment_elements(s.segments)) * (8 + 24 + 2), 0}; }

// A double sum in another order: 1e-6 relative.
OpRun build_sum_of_squares(Backend& be, const OpShape& s, CaseInputs& in) {
  Tensor t = in.tensor(be, "t", {s.rows}, s.dtype, normal_values(1.0));
  auto result = std::make_shared<double>(std::nan(""));
  return {[&be, t, result] { *result = be.sum_of_squares(t); },
          {{"sum", [result] { return std::vector<double>{*result}; }, within(0, 1e-6)}}};
}

OpCost sum_of_squares_cost(const OpShape& s) { return {static_cast<double>(s.rows) * dsize(s.dtype), 0}; }

// ---------------------------------------------------------------------------------------------
// The table.

std::vector<OpShape> norm_test_shapes() {
  return {rows_cols("one_row", 1, 64), rows_cols("odd_width", 7, 77), rows_cols("narrow", 3, 13),
          rows_cols("ragged", 33, 1001), rows_cols("d640", 64, 640),  rows_cols("d2048", 5, 2048),
          rows_cols("wide", 4, 4096)};
}

std::vector<OpShape> model_rows(std::int64_t ModelSize::*cols) {
  return per_model([&](const ModelSize& m) { return rows_cols(m.label, m.tokens(), m.*cols); });
}

std::vector<OpEntry> make_table() {
  std::vector<OpEntry> t;
  const std::vector<OpShape> embedding_tests = {with_vocab("one_row", 1, 7, 64), with_vocab("repeats_odd_width", 64, 5, 77),
                                                with_vocab("gpt2_vocab", 37, 50257, 16), with_vocab("d640", 33, 100, 640),
                                                with_vocab("narrow", 7, 1000, 13)};
  const std::vector<OpShape> embedding_bench =
      per_model([](const ModelSize& m) { return with_vocab(m.label, m.tokens(), m.vocab, m.d); });
  t.push_back({"embedding_forward", embedding_tests, embedding_bench, build_embedding_forward, embedding_forward_cost});
  t.push_back({"embedding_backward", embedding_tests, embedding_bench, build_embedding_backward, embedding_backward_cost});

  t.push_back({"rmsnorm_forward", norm_test_shapes(), model_rows(&ModelSize::d), build_rmsnorm_forward, rmsnorm_forward_cost});
  t.push_back({"residual_rmsnorm_forward", norm_test_shapes(), model_rows(&ModelSize::d), build_residual_rmsnorm_forward,
               residual_rmsnorm_forward_cost});
  t.push_back({"rmsnorm_backward", norm_test_shapes(), model_rows(&ModelSize::d),
               [](Backend& be, const OpShape& s, CaseInputs& in) { return build_rmsnorm_backward(be, s, in, false); },
               [](const OpShape& s) { return rmsnorm_backward_cost(s, false); }});
  t.push_back({"rmsnorm_backward_accumulate_dx", norm_test_shapes(), model_rows(&ModelSize::d),
               [](Backend& be, const OpShape& s, CaseInputs& in) { return build_rmsnorm_backward(be, s, in, true); },
               [](const OpShape& s) { return rmsnorm_backward_cost(s, true); }});

  // SwiGLU shapes: cols is the hidden width f (gate_up is [rows, 2 f]).
  const std::vector<OpShape> swiglu_tests = {rows_cols("one_row", 1, 5), rows_cols("odd_width", 7, 77),
                                             rows_cols("ragged", 3, 1001), rows_cols("f448", 16, 448),
                                             rows_cols("f128", 64, 128), rows_cols("f5632", 2, 5632)};
  t.push_back({"swiglu_forward", swiglu_tests, model_rows(&ModelSize::ffn), build_swiglu_forward, swiglu_forward_cost});
  t.push_back({"swiglu_backward", swiglu_tests, model_rows(&ModelSize::ffn), build_swiglu_backward, swiglu_backward_cost});

  // BF16: the residual stream; FP32: a weight gradient's contribution added to the gradient.
  std::vector<OpShape> add_bench = model_rows(&ModelSize::d);
  const ModelSize& large = model_sizes().back();
  add_bench.push_back(rows_cols("1b_gate_up_weight", 2 * large.ffn, large.d, DType::f32));
  t.push_back({"add_inplace",
               {rows_cols("one_element", 1, 1), rows_cols("odd_width", 7, 77), rows_cols("d640", 33, 640),
                rows_cols("long_row", 1, 12345), rows_cols("odd_width", 7, 77, DType::f32),
                rows_cols("ragged", 3, 4099, DType::f32)},
               add_bench, build_add_inplace, add_inplace_cost});

  const auto masked = [](std::string label, std::int64_t rows, std::int64_t vocab) {
    OpShape s = with_vocab(std::move(label), rows, vocab);
    s.mask_every = 3;
    return s;
  };
  t.push_back({"cross_entropy",
               {masked("one_row", 1, 7), masked("three_classes", 5, 3), masked("one_row_gpt2", 1, 50257),
                masked("gpt2_vocab", 4, 50257), masked("gpt2_vocab_two_masked", 5, 50257),
                with_vocab("gpt2_vocab_unmasked", 3, 50257), masked("v1000", 33, 1000), masked("ragged", 7, 4099)},
               per_model([](const ModelSize& m) { return with_vocab(m.label, m.tokens(), m.vocab); }), build_cross_entropy,
               cross_entropy_cost});

  const std::vector<OpShape> attention_tests = {
      attention_case("seq1", 1, 1, 2, 1, 64),
      attention_case("gqa_odd_seq", 2, 33, 4, 2, 64),
      attention_case("mqa_hd128", 1, 65, 4, 1, 128),
      attention_case("mha", 2, 128, 2, 2, 64),
      attention_case("gqa_hd128_seq17", 1, 17, 8, 2, 128),
      attention_case("ragged_seq200", 1, 200, 2, 1, 64)};
  const std::vector<OpShape> attention_bench = per_model([](const ModelSize& m) {
    return attention_case(m.label, m.batch, m.seq, m.heads, m.kv_heads, m.head_dim);
  });
  t.push_back({"attention_forward", attention_tests, attention_bench, build_attention_forward, attention_forward_cost});
  t.push_back({"attention_backward", attention_tests, attention_bench, build_attention_backward, attention_backward_cost});

  std::vector<OpShape> gemm_bench;
  for (const ModelSize& m : model_sizes()) {
    for (OpShape& s : linear_layer_gemms(m)) gemm_bench.push_back(std::move(s));
  }
  t.push_back({"gemm",
               {gemm_shape("fwd", {33, 20, 64, false, false, false}, DType::bf16),
                gemm_shape("fwd_one_row_odd", {1, 77, 40, false, false, false}, DType::bf16),
                gemm_shape("dgrad_odd", {45, 19, 130, false, true, false}, DType::bf16),
                gemm_shape("wgrad_accumulate", {24, 40, 130, true, true, true}, DType::f32),
                gemm_shape("wgrad_long_k", {7, 13, 1000, true, true, true}, DType::f32),
                gemm_shape("fwd_f32_out_k37", {64, 200, 37, false, false, false}, DType::f32),
                gemm_shape("lm_head_gpt2_vocab", {3, 50257, 64, false, false, false}, DType::bf16),
                gemm_shape("a_transposed", {17, 24, 96, true, false, false}, DType::bf16)},
               gemm_bench, build_gemm, gemm_cost});

  const std::vector<ParameterSegment> gapped = {{0, 100, true}, {103, 37, false}, {140, 1000, true}};
  t.push_back({"adamw_step",
               {adamw_shape("segments_with_gaps", 1200, gapped), adamw_shape("no_clipping", 1200, gapped, 1e-3),
                adamw_shape("skipped_step", 1200, gapped, 1.0, false), adamw_shape("one_element", 1, {{0, 1, true}}, 0.5),
                adamw_shape("large", 70001, {{0, 65536, true}, {65536, 4465, false}})},
               per_model([](const ModelSize& m) {
                 std::vector<ParameterSegment> segments = model_segments(m);
                 const std::int64_t elements = segment_elements(segments);  // before the vector moves
                 return adamw_shape(m.label, elements, std::move(segments));
               }),
               build_adamw_step, adamw_step_cost});

  t.push_back({"sum_of_squares",
               {flat("one_element", 1, DType::f32), flat("seven", 7, DType::f32), flat("thousand", 1000, DType::f32),
                flat("above_64k", 65537, DType::f32), flat("ragged", 4099, DType::bf16)},
               per_model([](const ModelSize& m) { return flat(m.label, segment_elements(model_segments(m)), DType::f32); }),
               build_sum_of_squares, sum_of_squares_cost});
  return t;
}

}  // namespace

// ---------------------------------------------------------------------------------------------

nlohmann::json OpShape::to_json() const {
  nlohmann::json j = {{"label", label}, {"dtype", dtype_name(dtype)}};
  if (rows) j["rows"] = rows;
  if (cols) j["cols"] = cols;
  if (vocab) j["vocab"] = vocab;
  if (mask_every) j["mask_every"] = mask_every;
  if (attention.batch) {
    j["attention"] = {{"batch", attention.batch},       {"seq", attention.seq},          {"heads", attention.heads},
                      {"kv_heads", attention.kv_heads}, {"head_dim", attention.head_dim}};
  }
  if (gemm.m) {
    j["gemm"] = {{"m", gemm.m}, {"n", gemm.n}, {"k", gemm.k}, {"a_transposed", gemm.a_transposed},
                 {"b_transposed", gemm.b_transposed}, {"accumulate", gemm.accumulate}};
  }
  if (!segments.empty()) {
    j["segments"] = segments.size();
    j["segment_elements"] = segment_elements(segments);
    j["gradient_scale"] = scale;
    j["finite_loss"] = finite_loss;
  }
  return j;
}

double Tolerance::bound(std::size_t i, double expected, double max_expected) const {
  double b = bf16_ulps * bf16_ulp(expected) + relative * std::fabs(expected) + floor_of_max * max_expected;
  if (!element_bound.empty()) b += element_bound[i];
  return b;
}

Tolerance bitwise() { return Tolerance{}; }

Tolerance within(double bf16_ulps, double relative, double floor_of_max, std::vector<double> element_bound) {
  Tolerance t;
  t.kind = CompareKind::bounded;
  t.bf16_ulps = bf16_ulps;
  t.relative = relative;
  t.floor_of_max = floor_of_max;
  t.element_bound = std::move(element_bound);
  return t;
}

Tolerance versus_reference(double factor, double floor_of_max_ref) {
  Tolerance t;
  t.kind = CompareKind::versus_reference;
  t.reference_factor = factor;
  t.reference_floor = floor_of_max_ref;
  return t;
}

namespace {

double max_abs(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) {
    if (std::isfinite(x)) m = std::max(m, std::fabs(x));
  }
  return m;
}

double max_abs_difference(const std::vector<double>& a, const std::vector<double>& b) {
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const double d = std::fabs(a[i] - b[i]);
    if (!(d <= m)) m = d;  // a NaN difference makes the maximum NaN
  }
  return m;
}

}  // namespace

Comparison compare_output(const Tolerance& tolerance, const std::vector<double>& got, const std::vector<double>& expected,
                          const std::vector<double>& reference, std::size_t keep_first) {
  if (got.size() != expected.size()) {
    throw Error(fmt::format("compare: {} values against {}", got.size(), expected.size()));
  }
  Comparison c;
  const auto fail = [&](std::size_t i, double g, double e, double bound) {
    ++c.failures;
    if (c.first.size() < keep_first) c.first.push_back({static_cast<std::int64_t>(i), g, e, bound});
  };
  switch (tolerance.kind) {
    case CompareKind::bitwise:
      for (std::size_t i = 0; i < got.size(); ++i) {
        if (!same_bits(got[i], expected[i])) fail(i, got[i], expected[i], 0.0);
      }
      break;
    case CompareKind::bounded: {
      if (!tolerance.element_bound.empty() && tolerance.element_bound.size() != got.size()) {
        throw Error(fmt::format("compare: {} element bounds for {} values", tolerance.element_bound.size(), got.size()));
      }
      const double max_expected = max_abs(expected);
      for (std::size_t i = 0; i < got.size(); ++i) {
        if (got[i] == expected[i] || (std::isnan(got[i]) && std::isnan(expected[i]))) continue;
        const double bound = tolerance.bound(i, expected[i], max_expected);
        if (!(std::fabs(got[i] - expected[i]) <= bound)) fail(i, got[i], expected[i], bound);
      }
      break;
    }
    case CompareKind::versus_reference: {
      if (reference.size() != got.size()) {
        throw Error(fmt::format("compare: {} reference values for {} values", reference.size(), got.size()));
      }
      const double got_error = max_abs_difference(got, reference), expected_error = max_abs_difference(expected, reference);
      const double scale = max_abs(reference);
      const double bound = tolerance.reference_factor * expected_error + tolerance.reference_floor * scale;
      c.criterion = fmt::format("max|got - ref| {:.4g} against {} x max|expected - ref| ({:.4g}) + {:.4g} x max|ref| ({:.4g}) = {:.4g}",
                                got_error, tolerance.reference_factor, expected_error, tolerance.reference_floor, scale, bound);
      for (std::size_t i = 0; i < got.size(); ++i) {
        if (!(std::fabs(got[i] - reference[i]) <= bound)) fail(i, got[i], reference[i], bound);
      }
      break;
    }
  }
  return c;
}

// ---------------------------------------------------------------------------------------------

Generator normal_values(double scale) {
  return [scale](std::uint64_t stream, std::int64_t count) {
    return per_element(count, [&](std::uint64_t i) { return scale * standard_normal(stream, i); });
  };
}

Generator squared_values(double scale) {
  return [scale](std::uint64_t stream, std::int64_t count) {
    return per_element(count, [&](std::uint64_t i) {
      const double x = scale * standard_normal(stream, i);
      return x * x;
    });
  };
}

Generator token_values(std::int64_t vocab, std::int64_t mask_every) {
  return [vocab, mask_every](std::uint64_t stream, std::int64_t count) {
    return per_element(count, [&](std::uint64_t i) {
      if (mask_every > 0 && i % static_cast<std::uint64_t>(mask_every) == 1) return -1.0;
      return std::min(std::floor(unit_interval(stream, i) * static_cast<double>(vocab)), static_cast<double>(vocab - 1));
    });
  };
}

Generator fixed_values(std::vector<double> values) {
  return [values](std::uint64_t, std::int64_t count) {
    if (static_cast<std::int64_t>(values.size()) != count) {
      throw Error(fmt::format("fixed input values: {} values for {} elements", values.size(), count));
    }
    return values;
  };
}

DType on_backend(const Backend& be, DType gpu_dtype) {
  switch (gpu_dtype) {
    case DType::bf16: return be.activation_dtype();
    case DType::f32: return be.param_dtype();
    default: return gpu_dtype;
  }
}

CaseInputs::CaseInputs(std::uint64_t seed, bool for_comparison) : seed_(seed), for_comparison_(for_comparison) {}

std::uint64_t CaseInputs::stream(const std::string& name) const { return splitmix64(seed_ ^ fnv1a(name)); }

std::vector<double> CaseInputs::values(const std::string& name, std::int64_t count, DType gpu_dtype,
                                       const Generator& generate) {
  if (const auto kept = kept_.find(name); kept != kept_.end()) {
    if (static_cast<std::int64_t>(kept->second.size()) != count) {
      throw Error(fmt::format("case input '{}' was made with {} elements, now asked for {}", name, kept->second.size(), count));
    }
    return kept->second;
  }
  std::vector<double> v = generate(stream(name), count);
  if (static_cast<std::int64_t>(v.size()) != count) {
    throw Error(fmt::format("case input '{}': {} values generated for {} elements", name, v.size(), count));
  }
  const std::int64_t n = count;
#pragma omp parallel for schedule(static) if (n >= (std::int64_t{1} << 16))
  for (std::int64_t i = 0; i < n; ++i) v[static_cast<std::size_t>(i)] = round_to(gpu_dtype, v[static_cast<std::size_t>(i)]);
  if (for_comparison_) kept_[name] = v;
  return v;
}

Tensor CaseInputs::tensor(Backend& be, const std::string& name, const Shape& shape, DType gpu_dtype,
                          const Generator& generate, bool exact_dtype) {
  const bool first_upload = !stored_.contains(name);
  stored_.insert(name);
  std::vector<double> v = values(name, shape_numel(shape), gpu_dtype, generate);
  Tensor t = be.empty(shape, exact_dtype ? gpu_dtype : on_backend(be, gpu_dtype));
  if (t.dtype() == DType::i32) {
    std::vector<std::int32_t> ids(v.size());
    for (std::size_t i = 0; i < v.size(); ++i) ids[i] = static_cast<std::int32_t>(v[i]);
    be.upload_tokens(t, ids);
  } else {
    be.upload(t, v);
    // What the first backend stored is what every later one gets.
    if (for_comparison_ && first_upload) kept_[name] = be.download(t);
  }
  return t;
}

const std::vector<OpEntry>& op_table() {
  static const std::vector<OpEntry> table = make_table();
  return table;
}

const OpEntry& op_entry(const std::string& name) {
  for (const OpEntry& e : op_table()) {
    if (e.name == name) return e;
  }
  throw Error(fmt::format("no operation '{}' in the operation table", name));
}

std::string case_name(const OpEntry& entry, const OpShape& shape) {
  return fmt::format("op/{}/{}/{}", entry.name, shape.label, dtype_name(shape.dtype));
}

std::uint64_t case_seed(const OpEntry& entry, const OpShape& shape) { return splitmix64(fnv1a(case_name(entry, shape))); }

}  // namespace quartet::ops

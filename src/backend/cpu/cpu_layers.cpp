// Element-wise and row-wise layers of the CPU backend: embedding, RMSNorm, SwiGLU, residual
// add, softmax cross-entropy.
#include <fmt/format.h>

#include <algorithm>

#include <cmath>

#include "backend/cpu/cpu_ops.h"
#include "numerics/parallel.h"
#include "quartet/error.h"

namespace quartet::cpu {

namespace {

void expect_2d(const char* what, const Tensor& t) {
  if (t.ndim() != 2) throw Error(fmt::format("{}: expected a 2-D tensor, got shape {}", what, shape_string(t.shape())));
}

void expect_same_shape(const char* what, const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape()) {
    throw Error(fmt::format("{}: shapes {} and {} differ", what, shape_string(a.shape()), shape_string(b.shape())));
  }
}

void check_tokens(const char* what, const Tensor& tokens, std::int64_t rows, std::int64_t vocab) {
  tokens.expect(what, {rows}, DType::i32);
  const std::int32_t* t = tokens.data<std::int32_t>();
  for (std::int64_t i = 0; i < rows; ++i) {
    if (t[i] < 0 || t[i] >= vocab) {
      throw Error(fmt::format("{}: token {} at position {} is outside the vocabulary of {}", what, t[i], i, vocab));
    }
  }
}

}  // namespace

template <class Real>
void embedding_forward(Tensor& out, const Tensor& tokens, const Tensor& table) {
  expect_2d("embedding", table);
  const std::int64_t n = out.dim(0), c = table.dim(1);
  out.expect("embedding output", {n, c}, out.dtype());
  check_tokens("embedding", tokens, n, table.dim(0));
  const In<Real> w(table);
  Out<Real> o(out, false);
  const std::int32_t* t = tokens.data<std::int32_t>();
  for (std::int64_t i = 0; i < n; ++i) {
    for (std::int64_t j = 0; j < c; ++j) o[i * c + j] = w[t[i] * c + j];
  }
  o.commit();
}

template <class Real>
void embedding_backward(Tensor& dtable, const Tensor& tokens, const Tensor& dout) {
  const std::int64_t n = dout.dim(0), c = dtable.dim(1);
  dout.expect("embedding gradient", {n, c}, dout.dtype());
  check_tokens("embedding backward", tokens, n, dtable.dim(0));
  const In<Real> d(dout);
  Out<Real> g(dtable, true);
  const std::int32_t* t = tokens.data<std::int32_t>();
  for (std::int64_t i = 0; i < n; ++i) {  // serial: tokens repeat, and the order stays fixed
    for (std::int64_t j = 0; j < c; ++j) g[t[i] * c + j] += d[i * c + j];
  }
  g.commit();
}

template <class Real>
void rmsnorm_forward(Tensor& out, Tensor& rstd, const Tensor& x, const Tensor& weight, double eps) {
  expect_2d("rmsnorm", x);
  const std::int64_t n = x.dim(0), c = x.dim(1);
  expect_same_shape("rmsnorm output", out, x);
  weight.expect("rmsnorm weight", {c}, weight.dtype());
  rstd.expect("rmsnorm rstd", {n}, dtype_of<Real>());
  const In<Real> xi(x), w(weight);
  Out<Real> o(out, false), r(rstd, false);
#pragma omp parallel for schedule(static) if (worth_parallel(n * c))
  for (std::int64_t i = 0; i < n; ++i) {
    Real ss = 0;
    for (std::int64_t j = 0; j < c; ++j) ss += xi[i * c + j] * xi[i * c + j];
    const Real s = Real(1) / std::sqrt(ss / static_cast<Real>(c) + static_cast<Real>(eps));
    r[i] = s;
    for (std::int64_t j = 0; j < c; ++j) o[i * c + j] = xi[i * c + j] * s * w[j];
  }
  o.commit();
  r.commit();
}

template <class Real>
void rmsnorm_backward(Tensor& dx, Tensor& dweight, const Tensor& dout, const Tensor& x,
                                        const Tensor& weight, const Tensor& rstd) {
  const std::int64_t n = x.dim(0), c = x.dim(1);
  expect_same_shape("rmsnorm backward", dout, x);
  expect_same_shape("rmsnorm backward dx", dx, x);
  weight.expect("rmsnorm backward weight", {c}, weight.dtype());
  dweight.expect("rmsnorm backward dweight", {c}, dweight.dtype());
  const In<Real> d(dout), xi(x), w(weight), r(rstd);
  Out<Real> g(dx, false), gw(dweight, true);
  std::vector<Real> dw_rows(static_cast<std::size_t>(n * c));
#pragma omp parallel for schedule(static) if (worth_parallel(n * c))
  for (std::int64_t i = 0; i < n; ++i) {
    // y = x s w, s = (mean x^2 + eps)^-1/2: dx = s (dy w) - x s^3 mean(dy w x)
    Real dot = 0;
    for (std::int64_t j = 0; j < c; ++j) dot += d[i * c + j] * w[j] * xi[i * c + j];
    const Real s = r[i];
    const Real coef = s * s * s * dot / static_cast<Real>(c);
    for (std::int64_t j = 0; j < c; ++j) {
      g[i * c + j] = s * d[i * c + j] * w[j] - xi[i * c + j] * coef;
      dw_rows[static_cast<std::size_t>(i * c + j)] = d[i * c + j] * xi[i * c + j] * s;
    }
  }
  for (std::int64_t i = 0; i < n; ++i) {  // the weight gradient is reduced in a fixed order
    for (std::int64_t j = 0; j < c; ++j) gw[j] += dw_rows[static_cast<std::size_t>(i * c + j)];
  }
  g.commit();
  gw.commit();
}

template <class Real>
void swiglu_forward(Tensor& out, const Tensor& gate_up) {
  const std::int64_t n = gate_up.dim(0), f = gate_up.dim(1) / 2;
  out.expect("swiglu output", {n, f}, out.dtype());
  if (gate_up.dim(1) != 2 * f) throw Error("swiglu: the gate|up input needs an even width");
  const In<Real> gu(gate_up);
  Out<Real> o(out, false);
#pragma omp parallel for schedule(static) if (worth_parallel(n * f))
  for (std::int64_t i = 0; i < n; ++i) {
    for (std::int64_t j = 0; j < f; ++j) {
      const Real g = gu[i * 2 * f + j], u = gu[i * 2 * f + f + j];
      o[i * f + j] = g / (Real(1) + std::exp(-g)) * u;
    }
  }
  o.commit();
}

template <class Real>
void swiglu_backward(Tensor& dgate_up, const Tensor& dout, const Tensor& gate_up) {
  const std::int64_t n = gate_up.dim(0), f = gate_up.dim(1) / 2;
  dout.expect("swiglu backward", {n, f}, dout.dtype());
  expect_same_shape("swiglu backward dgate_up", dgate_up, gate_up);
  const In<Real> gu(gate_up), d(dout);
  Out<Real> o(dgate_up, false);
#pragma omp parallel for schedule(static) if (worth_parallel(n * f))
  for (std::int64_t i = 0; i < n; ++i) {
    for (std::int64_t j = 0; j < f; ++j) {
      const Real g = gu[i * 2 * f + j], u = gu[i * 2 * f + f + j];
      const Real sig = Real(1) / (Real(1) + std::exp(-g));
      const Real silu = g * sig;
      o[i * 2 * f + j] = d[i * f + j] * u * sig * (Real(1) + g * (Real(1) - sig));
      o[i * 2 * f + f + j] = d[i * f + j] * silu;
    }
  }
  o.commit();
}

template <class Real>
void add_inplace(Tensor& a, const Tensor& b) {
  expect_same_shape("add", a, b);
  Out<Real> o(a, true);
  const In<Real> x(b);
  for (std::int64_t i = 0; i < a.numel(); ++i) o[i] += x[i];
  o.commit();
}

template <class Real>
double cross_entropy(Tensor& dlogits, const Tensor& logits, const Tensor& targets, double grad_scale) {
  expect_2d("cross_entropy", logits);
  const std::int64_t n = logits.dim(0), v = logits.dim(1);
  expect_same_shape("cross_entropy dlogits", dlogits, logits);
  targets.expect("cross_entropy targets", {n}, DType::i32);
  const std::int32_t* t = targets.data<std::int32_t>();
  for (std::int64_t i = 0; i < n; ++i) {
    if (t[i] >= v) throw Error(fmt::format("cross_entropy: target {} at row {} is outside the vocabulary of {}", t[i], i, v));
  }
  const In<Real> l(logits);
  Out<Real> d(dlogits, false);
  std::vector<double> row_loss(static_cast<std::size_t>(n), 0.0);
#pragma omp parallel for schedule(static) if (worth_parallel(n * v))
  for (std::int64_t i = 0; i < n; ++i) {
    const Real* row = l.data() + i * v;
    Real* drow = d.data() + i * v;
    if (t[i] < 0) {  // masked position: no loss, no gradient
      for (std::int64_t j = 0; j < v; ++j) drow[j] = 0;
      continue;
    }
    Real mx = row[0];
    for (std::int64_t j = 1; j < v; ++j) mx = std::max(mx, row[j]);
    double sum = 0;
    for (std::int64_t j = 0; j < v; ++j) sum += std::exp(static_cast<double>(row[j] - mx));
    const double log_z = std::log(sum) + static_cast<double>(mx);
    row_loss[static_cast<std::size_t>(i)] = log_z - static_cast<double>(row[t[i]]);
    for (std::int64_t j = 0; j < v; ++j) {
      const double p = std::exp(static_cast<double>(row[j]) - log_z);
      drow[j] = static_cast<Real>((p - (j == t[i] ? 1.0 : 0.0)) * grad_scale);
    }
  }
  d.commit();
  double total = 0;
  for (double x : row_loss) total += x;
  return total;
}

#define QUARTET_INSTANTIATE(Real)                                                                          \
  template void embedding_forward<Real>(Tensor&, const Tensor&, const Tensor&);                            \
  template void embedding_backward<Real>(Tensor&, const Tensor&, const Tensor&);                           \
  template void rmsnorm_forward<Real>(Tensor&, Tensor&, const Tensor&, const Tensor&, double);             \
  template void rmsnorm_backward<Real>(Tensor&, Tensor&, const Tensor&, const Tensor&, const Tensor&,      \
                                       const Tensor&);                                                     \
  template void swiglu_forward<Real>(Tensor&, const Tensor&);                                              \
  template void swiglu_backward<Real>(Tensor&, const Tensor&, const Tensor&);                              \
  template void add_inplace<Real>(Tensor&, const Tensor&);                                                 \
  template double cross_entropy<Real>(Tensor&, const Tensor&, const Tensor&, double);
QUARTET_INSTANTIATE(float)
QUARTET_INSTANTIATE(double)
#undef QUARTET_INSTANTIATE

}  // namespace quartet::cpu

// RMSNorm, forward (alone or fused with the residual add before it) and backward (optionally
// adding into the residual stream's gradient).
#include <cmath>
#include <vector>

#include "backend/cpu/ops.h"
#include "backend/cpu/shape_checks.h"
#include "numerics/parallel.h"

namespace quartet::cpu {

namespace {

// out = x s w per row with s = 1 / sqrt(mean(x^2) + eps), the squares summed in row order.
template <class Real>
void normalize_rows(const Real* x, const In<Real>& w, Out<Real>& o, Out<Real>& r, std::int64_t n, std::int64_t c,
                    double eps) {
#pragma omp parallel for schedule(static) if (worth_parallel(n * c))
  for (std::int64_t i = 0; i < n; ++i) {
    Real ss = 0;
    for (std::int64_t j = 0; j < c; ++j) ss += x[i * c + j] * x[i * c + j];
    const Real s = Real(1) / std::sqrt(ss / static_cast<Real>(c) + static_cast<Real>(eps));
    r[i] = s;
    for (std::int64_t j = 0; j < c; ++j) o[i * c + j] = x[i * c + j] * s * w[j];
  }
}

void check_norm_shapes(const Tensor& out, const Tensor& rstd, const Tensor& x, const Tensor& weight, DType rstd_dtype) {
  expect_2d("rmsnorm", x);
  expect_same_shape("rmsnorm output", out, x);
  weight.expect("rmsnorm weight", {x.dim(1)}, weight.dtype());
  rstd.expect("rmsnorm rstd", {x.dim(0)}, rstd_dtype);
}

}  // namespace

template <class Real>
void rmsnorm_forward(Tensor& out, Tensor& rstd, const Tensor& x, const Tensor& weight, double eps) {
  check_norm_shapes(out, rstd, x, weight, dtype_of<Real>());
  const In<Real> xi(x), w(weight);
  Out<Real> o(out, false), r(rstd, false);
  normalize_rows(xi.data(), w, o, r, x.dim(0), x.dim(1), eps);
  o.commit();
  r.commit();
}

template <class Real>
void residual_rmsnorm_forward(Tensor& sum, Tensor& out, Tensor& rstd, const Tensor& x, const Tensor& y,
                              const Tensor& weight, double eps) {
  check_norm_shapes(out, rstd, x, weight, dtype_of<Real>());
  expect_same_shape("residual add", y, x);
  expect_same_shape("residual sum", sum, x);
  {
    const In<Real> a(x), b(y);
    Out<Real> s(sum, false);
    for (std::int64_t i = 0; i < x.numel(); ++i) s[i] = a[i] + b[i];
    s.commit();  // rounded to the sum's dtype: the norm reads what is stored
  }
  const In<Real> stored(sum), w(weight);
  Out<Real> o(out, false), r(rstd, false);
  normalize_rows(stored.data(), w, o, r, x.dim(0), x.dim(1), eps);
  o.commit();
  r.commit();
}

template <class Real>
void rmsnorm_backward(Tensor& dx, Tensor& dweight, const Tensor& dout, const Tensor& x, const Tensor& weight,
                      const Tensor& rstd, bool accumulate_dx) {
  expect_2d("rmsnorm backward", x);
  const std::int64_t n = x.dim(0), c = x.dim(1);
  expect_same_shape("rmsnorm backward", dout, x);
  expect_same_shape("rmsnorm backward dx", dx, x);
  weight.expect("rmsnorm backward weight", {c}, weight.dtype());
  dweight.expect("rmsnorm backward dweight", {c}, dweight.dtype());
  rstd.expect("rmsnorm backward rstd", {n}, rstd.dtype());
  const In<Real> d(dout), xi(x), w(weight), r(rstd);
  Out<Real> g(dx, accumulate_dx), gw(dweight, true);
  std::vector<Real> dw_rows(static_cast<std::size_t>(n * c));
#pragma omp parallel for schedule(static) if (worth_parallel(n * c))
  for (std::int64_t i = 0; i < n; ++i) {
    // y = x s w, s = (mean x^2 + eps)^-1/2: dx = s (dy w) - x s^3 mean(dy w x)
    Real dot = 0;
    for (std::int64_t j = 0; j < c; ++j) dot += d[i * c + j] * w[j] * xi[i * c + j];
    const Real s = r[i];
    const Real coef = s * s * s * dot / static_cast<Real>(c);
    for (std::int64_t j = 0; j < c; ++j) {
      const Real grad = s * d[i * c + j] * w[j] - xi[i * c + j] * coef;
      g[i * c + j] = accumulate_dx ? g[i * c + j] + grad : grad;
      dw_rows[static_cast<std::size_t>(i * c + j)] = d[i * c + j] * xi[i * c + j] * s;
    }
  }
  for (std::int64_t i = 0; i < n; ++i) {  // the weight gradient is reduced in a fixed order
    for (std::int64_t j = 0; j < c; ++j) gw[j] += dw_rows[static_cast<std::size_t>(i * c + j)];
  }
  g.commit();
  gw.commit();
}

#define QUARTET_INSTANTIATE(Real)                                                                              \
  template void rmsnorm_forward<Real>(Tensor&, Tensor&, const Tensor&, const Tensor&, double);                 \
  template void residual_rmsnorm_forward<Real>(Tensor&, Tensor&, Tensor&, const Tensor&, const Tensor&,        \
                                               const Tensor&, double);                                         \
  template void rmsnorm_backward<Real>(Tensor&, Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, \
                                       bool);
QUARTET_INSTANTIATE(float)
QUARTET_INSTANTIATE(double)
#undef QUARTET_INSTANTIATE

}  // namespace quartet::cpu

// Optimizer-side operations of the CPU backend: norms, finiteness, scaling, AdamW.
#include <fmt/format.h>

#include <cmath>

#include "backend/cpu/cpu_ops.h"
#include "numerics/parallel.h"
#include "quartet/error.h"

namespace quartet::cpu {

template <class Real>
double sum_of_squares(const Tensor& t) {
  const In<Real> in(t);
  double s = 0;  // serial, in double: the same result for any thread count
  for (std::int64_t i = 0; i < t.numel(); ++i) s += static_cast<double>(in[i]) * static_cast<double>(in[i]);
  return s;
}

template <class Real>
bool all_finite(const Tensor& t) {
  const In<Real> in(t);
  for (std::int64_t i = 0; i < t.numel(); ++i) {
    if (!std::isfinite(in[i])) return false;
  }
  return true;
}

template <class Real>
void scale(Tensor& t, double factor) {
  Out<Real> o(t, true);
  const auto f = static_cast<Real>(factor);
  for (std::int64_t i = 0; i < t.numel(); ++i) o[i] *= f;
  o.commit();
}

// Decoupled weight decay (AdamW): p <- p - lr (m_hat / (sqrt(v_hat) + eps) + wd p).
template <class Real>
void adamw_update(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWParams& p) {
  if (param.shape() != grad.shape() || param.shape() != m.shape() || param.shape() != v.shape()) {
    throw Error(fmt::format("adamw: parameter {} with gradient {} and moments {}, {}", shape_string(param.shape()),
                            shape_string(grad.shape()), shape_string(m.shape()), shape_string(v.shape())));
  }
  Out<Real> w(param, true), mo(m, true), vo(v, true);
  const In<Real> g(grad);
  const Real b1 = static_cast<Real>(p.beta1), b2 = static_cast<Real>(p.beta2);
  const Real c1 = static_cast<Real>(1.0 - std::pow(p.beta1, static_cast<double>(p.step)));
  const Real c2 = static_cast<Real>(1.0 - std::pow(p.beta2, static_cast<double>(p.step)));
  const Real lr = static_cast<Real>(p.lr), eps = static_cast<Real>(p.eps), wd = static_cast<Real>(p.weight_decay);
  const std::int64_t n = param.numel();
#pragma omp parallel for schedule(static) if (worth_parallel(n))
  for (std::int64_t i = 0; i < n; ++i) {
    mo[i] = b1 * mo[i] + (Real(1) - b1) * g[i];
    vo[i] = b2 * vo[i] + (Real(1) - b2) * g[i] * g[i];
    const Real m_hat = mo[i] / c1, v_hat = vo[i] / c2;
    w[i] -= lr * (m_hat / (std::sqrt(v_hat) + eps) + wd * w[i]);
  }
  w.commit();
  mo.commit();
  vo.commit();
}

#define QUARTET_INSTANTIATE(Real)                                        \
  template double sum_of_squares<Real>(const Tensor&);                   \
  template bool all_finite<Real>(const Tensor&);                         \
  template void scale<Real>(Tensor&, double);                            \
  template void adamw_update<Real>(Tensor&, const Tensor&, Tensor&, Tensor&, const AdamWParams&);
QUARTET_INSTANTIATE(float)
QUARTET_INSTANTIATE(double)
#undef QUARTET_INSTANTIATE

}  // namespace quartet::cpu

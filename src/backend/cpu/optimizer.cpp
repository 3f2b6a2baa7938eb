// Optimizer-side operations of the CPU backend: norms, finiteness, the AdamW step over flat
// buffers with global-norm clipping.
#include <fmt/format.h>

#include <cmath>

#include "backend/cpu/ops.h"
#include "numerics/parallel.h"
#include "quartet/error.h"
#include "quartet/numerics/bf16.h"

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

namespace {

void check_flat_buffers(const Tensor& params, const Tensor& params_bf16, const Tensor& grads, const Tensor& m,
                        const Tensor& v, const std::vector<ParameterSegment>& segments, const Tensor& status) {
  const std::int64_t n = params.numel();
  const std::pair<const Tensor*, const char*> buffers[] = {{&grads, "the gradients"}, {&m, "the first moments"},
                                                           {&v, "the second moments"}};
  for (const auto& [t, what] : buffers) {
    if (t->numel() != n || t->dtype() != params.dtype()) {
      throw Error(fmt::format("adamw: {} must be a flat buffer like the parameters ({} {}), got {} {}", what, n,
                              dtype_name(params.dtype()), t->numel(), dtype_name(t->dtype())));
    }
  }
  if (params_bf16.defined()) params_bf16.expect("adamw bf16 parameter copy", {n}, DType::bf16);
  status.expect("adamw step status", {kStepSlots}, DType::f64);
  check_parameter_segments(segments, n);
}

}  // namespace

template <class Real>
void gradient_squares(const Tensor& grads, const std::vector<ParameterSegment>& segments, Tensor& status) {
  if (grads.dtype() != dtype_of<Real>()) {
    throw Error(fmt::format("gradient_squares: the gradients must be {}, got {}", dtype_name(dtype_of<Real>()),
                            dtype_name(grads.dtype())));
  }
  status.expect("adamw step status", {kStepSlots}, DType::f64);
  check_parameter_segments(segments, grads.numel());
  const Real* g = grads.data<Real>();
  double sq = 0;  // serial, in double, segment by segment: the same result for any thread count
  for (const ParameterSegment& s : segments) {
    for (std::int64_t i = s.offset; i < s.offset + s.count; ++i) sq += static_cast<double>(g[i]) * static_cast<double>(g[i]);
  }
  double* st = status.data<double>();
  st[kStepGradNorm] = sq;
  st[kStepNonFiniteInput] = 0;  // synchronous quantizers throw instead of recording
  st[kStepNonFiniteKey] = 0;
}

template <class Real>
void adamw_update(Tensor& params, Tensor& params_bf16, const Tensor& grads, Tensor& m, Tensor& v,
                  const std::vector<ParameterSegment>& segments, const AdamWStep& hp, Tensor& status) {
  check_flat_buffers(params, params_bf16, grads, m, v, segments, status);
  double* st = status.data<double>();
  const Real* g = grads.data<Real>();
  const double norm = std::sqrt(st[kStepGradNorm]);
  st[kStepGradNorm] = norm;
  const bool apply = std::isfinite(st[kStepLoss]) && std::isfinite(norm) && st[kStepNonFiniteInput] == 0;
  st[kStepApplied] = apply ? 1 : 0;
  if (!apply) return;

  const bool clip = norm > hp.max_grad_norm;
  const auto factor = static_cast<Real>(hp.max_grad_norm / norm);
  const Real b1 = static_cast<Real>(hp.beta1), b2 = static_cast<Real>(hp.beta2);
  const Real c1 = static_cast<Real>(1.0 - std::pow(hp.beta1, static_cast<double>(hp.step)));
  const Real c2 = static_cast<Real>(1.0 - std::pow(hp.beta2, static_cast<double>(hp.step)));
  const Real lr = static_cast<Real>(hp.lr), eps = static_cast<Real>(hp.eps);
  Real* w = params.data<Real>();
  Real* mo = m.data<Real>();
  Real* vo = v.data<Real>();
  std::uint16_t* w16 = params_bf16.defined() ? params_bf16.data<std::uint16_t>() : nullptr;
  for (const ParameterSegment& s : segments) {
    const Real wd = s.decay ? static_cast<Real>(hp.weight_decay) : Real(0);
#pragma omp parallel for schedule(static) if (worth_parallel(s.count))
    for (std::int64_t i = s.offset; i < s.offset + s.count; ++i) {
      const Real gi = clip ? g[i] * factor : g[i];
      mo[i] = b1 * mo[i] + (Real(1) - b1) * gi;
      vo[i] = b2 * vo[i] + (Real(1) - b2) * gi * gi;
      const Real m_hat = mo[i] / c1, v_hat = vo[i] / c2;
      w[i] -= lr * (m_hat / (std::sqrt(v_hat) + eps) + wd * w[i]);
      if (w16 != nullptr) w16[i] = bf16_bits(static_cast<float>(w[i]));
    }
  }
}

// The two halves in a row: nothing else runs between them on one process.
template <class Real>
void adamw_step(Tensor& params, Tensor& params_bf16, const Tensor& grads, Tensor& m, Tensor& v,
                const std::vector<ParameterSegment>& segments, const AdamWStep& hp, Tensor& status) {
  check_flat_buffers(params, params_bf16, grads, m, v, segments, status);
  gradient_squares<Real>(grads, segments, status);
  adamw_update<Real>(params, params_bf16, grads, m, v, segments, hp, status);
}

#define QUARTET_INSTANTIATE(Real)                                                                               \
  template double sum_of_squares<Real>(const Tensor&);                                                          \
  template bool all_finite<Real>(const Tensor&);                                                                \
  template void adamw_step<Real>(Tensor&, Tensor&, const Tensor&, Tensor&, Tensor&,                             \
                                 const std::vector<ParameterSegment>&, const AdamWStep&, Tensor&);         \
  template void gradient_squares<Real>(const Tensor&, const std::vector<ParameterSegment>&, Tensor&);         \
  template void adamw_update<Real>(Tensor&, Tensor&, const Tensor&, Tensor&, Tensor&,                           \
                                   const std::vector<ParameterSegment>&, const AdamWStep&, Tensor&);
QUARTET_INSTANTIATE(float)
QUARTET_INSTANTIATE(double)
#undef QUARTET_INSTANTIATE

}  // namespace quartet::cpu

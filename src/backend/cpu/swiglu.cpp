// SwiGLU: out = silu(gate) * up on a fused [gate | up] input, and its backward.
#include <cmath>

#include "backend/cpu/ops.h"
#include "backend/cpu/shape_checks.h"
#include "numerics/parallel.h"
#include "quartet/error.h"

namespace quartet::cpu {

template <class Real>
void swiglu_forward(Tensor& out, const Tensor& gate_up) {
  expect_2d("swiglu", gate_up);
  const std::int64_t n = gate_up.dim(0), f = gate_up.dim(1) / 2;
  if (gate_up.dim(1) != 2 * f) throw Error("swiglu: the gate|up input needs an even width");
  out.expect("swiglu output", {n, f}, out.dtype());
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
  expect_2d("swiglu backward", gate_up);
  const std::int64_t n = gate_up.dim(0), f = gate_up.dim(1) / 2;
  if (gate_up.dim(1) != 2 * f) throw Error("swiglu backward: the gate|up input needs an even width");
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

#define QUARTET_INSTANTIATE(Real)                                  \
  template void swiglu_forward<Real>(Tensor&, const Tensor&);      \
  template void swiglu_backward<Real>(Tensor&, const Tensor&, const Tensor&);
QUARTET_INSTANTIATE(float)
QUARTET_INSTANTIATE(double)
#undef QUARTET_INSTANTIATE

}  // namespace quartet::cpu

// Element-wise operations of the CPU backend: the residual add.
#include "backend/cpu/ops.h"
#include "backend/cpu/shape_checks.h"

namespace quartet::cpu {

template <class Real>
void add_inplace(Tensor& a, const Tensor& b) {
  expect_same_shape("add", a, b);
  Out<Real> o(a, true);
  const In<Real> x(b);
  for (std::int64_t i = 0; i < a.numel(); ++i) o[i] += x[i];
  o.commit();
}

template void add_inplace<float>(Tensor&, const Tensor&);
template void add_inplace<double>(Tensor&, const Tensor&);

}  // namespace quartet::cpu

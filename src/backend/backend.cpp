// The Backend interface's own conveniences, written once over its virtual operations.
#include "quartet/backend/backend.h"

namespace quartet {

Tensor Backend::zeros(const Shape& shape, DType dtype) {
  Tensor t = empty(shape, dtype);
  fill(t, 0.0);
  return t;
}

double Backend::cross_entropy_loss(Tensor& dlogits, const Tensor& logits, const Tensor& targets, double grad_scale) {
  Tensor sum = zeros({1}, DType::f64);
  cross_entropy(dlogits, logits, targets, logits.ndim() == 2 ? logits.dim(1) : 0, grad_scale, sum);
  raise_pending_errors();
  return download(sum)[0];
}

}  // namespace quartet

// The Backend interface's own conveniences, written once over its virtual operations.
#include "quartet/backend/backend.h"

#include <fmt/format.h>

#include <algorithm>

#include "quartet/error.h"

namespace quartet {

Tensor Backend::zeros(const Shape& shape, DType dtype) {
  Tensor t = empty(shape, dtype);
  fill(t, 0.0);
  return t;
}

void check_parameter_segments(const std::vector<ParameterSegment>& segments, std::int64_t elements) {
  for (const ParameterSegment& s : segments) {
    if (s.offset < 0 || s.count < 0 || s.offset > elements || s.count > elements - s.offset) {
      throw Error(fmt::format("adamw: segment [{}, +{}) is outside the {} parameters", s.offset, s.count, elements));
    }
  }
  std::vector<ParameterSegment> sorted = segments;
  std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.offset < b.offset; });
  for (std::size_t i = 1; i < sorted.size(); ++i) {
    const ParameterSegment &a = sorted[i - 1], &b = sorted[i];
    if (a.count > 0 && b.count > 0 && b.offset < a.offset + a.count) {
      throw Error(fmt::format("adamw: segments [{}, +{}) and [{}, +{}) overlap", a.offset, a.count, b.offset, b.count));
    }
  }
}

double Backend::cross_entropy_loss(Tensor& dlogits, const Tensor& logits, const Tensor& targets, double grad_scale) {
  Tensor sum = zeros({1}, DType::f64);
  cross_entropy(dlogits, logits, targets, logits.ndim() == 2 ? logits.dim(1) : 0, grad_scale, sum);
  raise_pending_errors();
  return download(sum)[0];
}

}  // namespace quartet

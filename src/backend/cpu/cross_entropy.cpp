// Softmax cross-entropy over the first `classes` columns (the vocabulary; columns beyond are
// padding), the loss summed into a one-element tensor and the gradient written over the logits
// (the same buffer may hold both).
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cpu/ops.h"
#include "backend/cpu/shape_checks.h"
#include "numerics/parallel.h"
#include "quartet/error.h"

namespace quartet::cpu {

template <class Real>
void cross_entropy(Tensor& dlogits, const Tensor& logits, const Tensor& targets, std::int64_t classes,
                   double grad_scale, Tensor& loss_sum) {
  expect_2d("cross_entropy", logits);
  const std::int64_t n = logits.dim(0), width = logits.dim(1), v = classes;
  if (classes < 1 || classes > width) {
    throw Error(fmt::format("cross_entropy: {} classes in logits of {} columns", classes, width));
  }
  expect_same_shape("cross_entropy dlogits", dlogits, logits);
  targets.expect("cross_entropy targets", {n}, DType::i32);
  loss_sum.expect("cross_entropy loss sum", {1}, DType::f64);
  const std::int32_t* t = targets.data<std::int32_t>();
  for (std::int64_t i = 0; i < n; ++i) {
    if (t[i] >= v || t[i] < -1) {
      throw Error(fmt::format("cross_entropy: target {} at row {} is outside the vocabulary of {} (or -1 for none)", t[i],
                              i, v));
    }
  }
  const In<Real> l(logits);
  Out<Real> d(dlogits, false);
  std::vector<double> row_loss(static_cast<std::size_t>(n), 0.0);
#pragma omp parallel for schedule(static) if (worth_parallel(n * v))
  for (std::int64_t i = 0; i < n; ++i) {
    const Real* row = l.data() + i * width;
    Real* drow = d.data() + i * width;
    for (std::int64_t j = v; j < width; ++j) drow[j] = 0;  // padding
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
  for (double x : row_loss) total += x;  // row order: the same sum for any thread count
  loss_sum.data<double>()[0] += total;
}

template void cross_entropy<float>(Tensor&, const Tensor&, const Tensor&, std::int64_t, double, Tensor&);
template void cross_entropy<double>(Tensor&, const Tensor&, const Tensor&, std::int64_t, double, Tensor&);

}  // namespace quartet::cpu

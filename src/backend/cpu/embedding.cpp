// Token embedding, forward (a row gather) and backward (rows added into the table's gradient
// in position order).
#include <fmt/format.h>

#include "backend/cpu/ops.h"
#include "backend/cpu/shape_checks.h"
#include "quartet/error.h"

namespace quartet::cpu {

namespace {

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
  expect_2d("embedding backward", dtable);
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

#define QUARTET_INSTANTIATE(Real)                                               \
  template void embedding_forward<Real>(Tensor&, const Tensor&, const Tensor&); \
  template void embedding_backward<Real>(Tensor&, const Tensor&, const Tensor&);
QUARTET_INSTANTIATE(float)
QUARTET_INSTANTIATE(double)
#undef QUARTET_INSTANTIATE

}  // namespace quartet::cpu

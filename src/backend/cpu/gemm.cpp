// GEMMs and the quantized-operand operations of the CPU backend. Quantization goes through
// the numerics core (quantize / gemm_quantized), so the CPU backend is the specification.
#include <fmt/format.h>

#include "backend/cpu/ops.h"
#include "quartet/error.h"
#include "quartet/numerics/bf16.h"
#include "quartet/numerics/gemm.h"

namespace quartet::cpu {

template <class Real>
void gemm(Tensor& out, const Tensor& a, bool a_transposed, const Tensor& b, bool b_transposed, bool accumulate) {
  if (a.ndim() != 2 || b.ndim() != 2 || out.ndim() != 2) throw Error("gemm: operands must be 2-D");
  const std::int64_t m = a_transposed ? a.dim(1) : a.dim(0), k = a_transposed ? a.dim(0) : a.dim(1);
  const std::int64_t n = b_transposed ? b.dim(1) : b.dim(0), kb = b_transposed ? b.dim(0) : b.dim(1);
  if (k != kb || out.dim(0) != m || out.dim(1) != n) {
    throw Error(fmt::format("gemm: A {}{} and B {}{} do not give out {}", shape_string(a.shape()),
                            a_transposed ? "^T" : "", shape_string(b.shape()), b_transposed ? "^T" : "",
                            shape_string(out.shape())));
  }
  // The GPU runs this as a BF16 GEMM with FP32 accumulation: round the inputs to BF16
  // (activations already are; FP32 master weights are not).
  std::vector<Real> ra(static_cast<std::size_t>(a.numel())), rb(static_cast<std::size_t>(b.numel()));
  read_tensor(a, ra.data());
  read_tensor(b, rb.data());
  if constexpr (std::is_same_v<Real, float>) {
    for (float& v : ra) v = round_to_bf16(v);
    for (float& v : rb) v = round_to_bf16(v);
  }
  Out<Real> o(out, accumulate);
  blas_gemm<Real>(a_transposed, b_transposed, m, n, k, Real(1), ra.data(), a.dim(1), rb.data(), b.dim(1),
                  accumulate ? Real(1) : Real(0), o.data(), n);
  o.commit();
}

const QuantizedTensor& host_quantized(const QTensor& q) {
  if (!q.defined()) throw Error("a quantized operand is missing");
  return *static_cast<const QuantizedTensor*>(q.impl.get());
}

namespace {

QTensor wrap(QuantizedTensor t) {
  QTensor q;
  q.rows = t.rows;
  q.cols = t.cols;
  q.format = t.format;
  q.rotation_size = t.rotation_size;
  q.square_blocks = t.square_blocks;
  q.bytes = t.codes.size() + t.scales.size() + t.trust_mask.size() + sizeof(float);
  q.impl = std::make_shared<const QuantizedTensor>(std::move(t));
  return q;
}

}  // namespace

template <class Real>
void gemm_quantized(Tensor& out, const QTensor& a, const QTensor& b, bool accumulate) {
  out.expect("quantized gemm output", {a.rows, b.rows}, out.dtype());
  const std::vector<float> product = quartet::gemm_quantized(host_quantized(a), host_quantized(b));
  Out<Real> o(out, accumulate);
  for (std::size_t i = 0; i < product.size(); ++i) {
    o[static_cast<std::int64_t>(i)] = accumulate ? o[static_cast<std::int64_t>(i)] + product[i] : product[i];
  }
  o.commit();
}

template <class Real>
QTensor quantize(const Tensor& x, bool transpose, const QuantizerSpec& spec, const Rotation& rotation,
                 const RandomContext& random) {
  if (x.ndim() != 2) throw Error(fmt::format("quantize: expected a 2-D tensor, got {}", shape_string(x.shape())));
  const std::int64_t r = x.dim(0), c = x.dim(1);
  std::vector<Real> values(static_cast<std::size_t>(x.numel()));
  read_tensor(x, values.data());
  std::vector<float> src(values.size());
  if (transpose) {
    for (std::int64_t i = 0; i < r; ++i)
      for (std::int64_t j = 0; j < c; ++j) src[static_cast<std::size_t>(j * r + i)] = static_cast<float>(values[static_cast<std::size_t>(i * c + j)]);
  } else {
    for (std::size_t i = 0; i < values.size(); ++i) src[i] = static_cast<float>(values[i]);
  }
  const std::int64_t rows = transpose ? c : r, cols = transpose ? r : c;
  return wrap(quartet::quantize(ConstMatrixView(src.data(), rows, cols), spec, rotation, random));
}

QTensor requantize_transposed(const QTensor& q, const QuantizerSpec& spec, const Rotation& rotation,
                              const RandomContext& random) {
  const QuantizedTensor& src = host_quantized(q);
  const std::vector<float> values = dequantize(src);  // rows x cols, in src's rotated domain
  std::vector<float> transposed(values.size());
  for (std::int64_t i = 0; i < src.rows; ++i)
    for (std::int64_t j = 0; j < src.cols; ++j) transposed[static_cast<std::size_t>(j * src.rows + i)] = values[static_cast<std::size_t>(i * src.cols + j)];
  return wrap(quartet::quantize(ConstMatrixView(transposed.data(), src.cols, src.rows), spec, rotation, random));
}

QTensor transpose_square_blocks(const QTensor& q) { return wrap(quartet::transpose_square_blocks(host_quantized(q))); }

template <class Real>
void apply_trust_mask_and_unrotate(Tensor& g, const QTensor& q, const Rotation& rotation) {
  const QuantizedTensor& t = host_quantized(q);
  g.expect("trust-mask gradient", {t.rows, t.cols}, g.dtype());
  if (t.rotation_size != rotation.size) {
    throw Error(fmt::format("trust mask: the operand was rotated with size {}, not {}", t.rotation_size, rotation.size));
  }
  Out<Real> o(g, true);
  std::vector<float> rows(static_cast<std::size_t>(t.rows * t.cols));
  for (std::int64_t i = 0; i < t.rows; ++i)
    for (std::int64_t j = 0; j < t.cols; ++j)
      rows[static_cast<std::size_t>(i * t.cols + j)] = t.trusted(i, j) ? static_cast<float>(o[i * t.cols + j]) : 0.0f;
  unrotate_rows(rows.data(), t.rows, t.cols, t.cols, rotation);
  for (std::size_t i = 0; i < rows.size(); ++i) o[static_cast<std::int64_t>(i)] = rows[i];
  o.commit();
}

#define QUARTET_INSTANTIATE(Real)                                                                          \
  template void gemm<Real>(Tensor&, const Tensor&, bool, const Tensor&, bool, bool);                       \
  template void gemm_quantized<Real>(Tensor&, const QTensor&, const QTensor&, bool);                      \
  template QTensor quantize<Real>(const Tensor&, bool, const QuantizerSpec&, const Rotation&, const RandomContext&); \
  template void apply_trust_mask_and_unrotate<Real>(Tensor&, const QTensor&, const Rotation&);
QUARTET_INSTANTIATE(float)
QUARTET_INSTANTIATE(double)
#undef QUARTET_INSTANTIATE

}  // namespace quartet::cpu

// Host tensor access for the CPU backend: dtype conversion (BF16 rounding on store) and BLAS.
#include <fmt/format.h>

#include "backend/cpu/ops.h"
#include "numerics/fixed_order_blas.h"
#include "quartet/error.h"
#include "quartet/numerics/bf16.h"

namespace quartet::cpu {

template <class Real>
void read_tensor(const Tensor& t, Real* out) {
  const std::int64_t n = t.numel();
  switch (t.dtype()) {
    case DType::f32: {
      const float* p = t.data<float>();
      for (std::int64_t i = 0; i < n; ++i) out[i] = static_cast<Real>(p[i]);
      break;
    }
    case DType::f64: {
      const double* p = t.data<double>();
      for (std::int64_t i = 0; i < n; ++i) out[i] = static_cast<Real>(p[i]);
      break;
    }
    case DType::bf16: {
      const std::uint16_t* p = t.data<std::uint16_t>();
      for (std::int64_t i = 0; i < n; ++i) out[i] = static_cast<Real>(bf16_to_float(p[i]));
      break;
    }
    default: throw Error(fmt::format("a {} tensor cannot be read as real numbers", dtype_name(t.dtype())));
  }
}

template <class Real>
void write_tensor(Tensor& t, const Real* in) {
  const std::int64_t n = t.numel();
  switch (t.dtype()) {
    case DType::f32: {
      float* p = t.data<float>();
      for (std::int64_t i = 0; i < n; ++i) p[i] = static_cast<float>(in[i]);
      break;
    }
    case DType::f64: {
      double* p = t.data<double>();
      for (std::int64_t i = 0; i < n; ++i) p[i] = static_cast<double>(in[i]);
      break;
    }
    case DType::bf16: {
      std::uint16_t* p = t.data<std::uint16_t>();
      for (std::int64_t i = 0; i < n; ++i) p[i] = bf16_bits(static_cast<float>(in[i]));
      break;
    }
    default: throw Error(fmt::format("a {} tensor cannot hold real numbers", dtype_name(t.dtype())));
  }
}

template <class Real>
In<Real>::In(const Tensor& t) {
  if (t.device() != Device::cpu) throw Error("the CPU backend got a GPU tensor");
  if (t.dtype() == dtype_of<Real>()) {
    ptr_ = t.data<Real>();
  } else {
    converted_.resize(static_cast<std::size_t>(t.numel()));
    read_tensor(t, converted_.data());
    ptr_ = converted_.data();
  }
}

template <class Real>
Out<Real>::Out(Tensor& t, bool keep_contents) : tensor_(&t) {
  if (t.device() != Device::cpu) throw Error("the CPU backend got a GPU tensor");
  if (t.dtype() == dtype_of<Real>()) {
    ptr_ = t.data<Real>();
  } else {
    converted_.assign(static_cast<std::size_t>(t.numel()), Real(0));
    if (keep_contents) read_tensor(t, converted_.data());
    ptr_ = converted_.data();
  }
}

template <class Real>
void Out<Real>::commit() {
  if (!converted_.empty()) write_tensor(*tensor_, converted_.data());
}

// Through fixed_order_gemm: the same bits for any thread count (OpenBLAS's own threading
// splits the work, and so rounds, differently for each count).
template <>
void blas_gemm<float>(bool at, bool bt, std::int64_t m, std::int64_t n, std::int64_t k, float alpha, const float* a,
                      std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c, std::int64_t ldc) {
  // out = A B^T in the row-major "TN" sense: B is given as [n, k] unless transposed.
  fixed_order_gemm(at, !bt, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

template <>
void blas_gemm<double>(bool at, bool bt, std::int64_t m, std::int64_t n, std::int64_t k, double alpha, const double* a,
                       std::int64_t lda, const double* b, std::int64_t ldb, double beta, double* c, std::int64_t ldc) {
  fixed_order_gemm(at, !bt, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

template void read_tensor<float>(const Tensor&, float*);
template void read_tensor<double>(const Tensor&, double*);
template void write_tensor<float>(Tensor&, const float*);
template void write_tensor<double>(Tensor&, const double*);
template class In<float>;
template class In<double>;
template class Out<float>;
template class Out<double>;

}  // namespace quartet::cpu

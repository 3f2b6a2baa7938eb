// The CPU backend's operations as free function templates over the arithmetic type: Real =
// float (activations stored as BF16, parameters FP32, FP32 math: the GPU's numerics) and
// Real = double (no rounding anywhere: the gradient-check reference). Each file defines a
// family and instantiates it for both; cpu_backend.cpp wires them into the Backend interface.
#pragma once

#include <vector>

#include "quartet/backend/backend.h"

namespace quartet::cpu {

// A read-only view of a host tensor's elements as Real: zero-copy when the dtype matches,
// otherwise converted once.
template <class Real>
class In {
 public:
  explicit In(const Tensor& t);
  const Real* data() const { return ptr_; }
  const Real& operator[](std::int64_t i) const { return ptr_[i]; }

 private:
  std::vector<Real> converted_;
  const Real* ptr_ = nullptr;
};

// A writable Real buffer for a host tensor, stored back (rounded to BF16 for BF16 tensors)
// by commit(). With `keep_contents` it starts from the tensor's values (for accumulation).
template <class Real>
class Out {
 public:
  Out(Tensor& t, bool keep_contents);
  Real* data() { return ptr_; }
  Real& operator[](std::int64_t i) { return ptr_[i]; }
  void commit();

 private:
  Tensor* tensor_;
  std::vector<Real> converted_;
  Real* ptr_ = nullptr;
};

// Copies between tensors of any real dtype and Real buffers.
template <class Real>
void read_tensor(const Tensor& t, Real* out);
template <class Real>
void write_tensor(Tensor& t, const Real* in);

// c (+)= alpha op(A) op(B)^T on row-major buffers through BLAS, in the "TN" sense of
// numerics.md: A is [m, k] (or [k, m] when a_transposed), B is [n, k] (or [k, n]).
template <class Real>
void blas_gemm(bool a_transposed, bool b_transposed, std::int64_t m, std::int64_t n, std::int64_t k, Real alpha,
               const Real* a, std::int64_t lda, const Real* b, std::int64_t ldb, Real beta, Real* c, std::int64_t ldc);

// ---- embedding.cpp, rmsnorm.cpp, swiglu.cpp, elementwise.cpp, cross_entropy.cpp ----
template <class Real>
void embedding_forward(Tensor& out, const Tensor& tokens, const Tensor& table);
template <class Real>
void embedding_backward(Tensor& dtable, const Tensor& tokens, const Tensor& dout);
template <class Real>
void rmsnorm_forward(Tensor& out, Tensor& rstd, const Tensor& x, const Tensor& weight, double eps);
template <class Real>
void residual_rmsnorm_forward(Tensor& sum, Tensor& out, Tensor& rstd, const Tensor& x, const Tensor& y,
                              const Tensor& weight, double eps);
template <class Real>
void rmsnorm_backward(Tensor& dx, Tensor& dweight, const Tensor& dout, const Tensor& x, const Tensor& weight,
                      const Tensor& rstd, bool accumulate_dx);
template <class Real>
void swiglu_forward(Tensor& out, const Tensor& gate_up);
template <class Real>
void swiglu_backward(Tensor& dgate_up, const Tensor& dout, const Tensor& gate_up);
template <class Real>
void add_inplace(Tensor& a, const Tensor& b);
template <class Real>
void cross_entropy(Tensor& dlogits, const Tensor& logits, const Tensor& targets, std::int64_t classes,
                   double grad_scale, Tensor& loss_sum);

// ---- attention.cpp ----
template <class Real>
void attention_forward(Tensor& out, AttentionSaved& saved, const Tensor& qkv, const AttentionShape& shape);
template <class Real>
void attention_backward(Tensor& dqkv, const Tensor& dout, const Tensor& qkv, const AttentionSaved& saved,
                        const AttentionShape& shape);

// ---- attention_cached.cpp ----
template <class Real>
void attention_forward_cached(Tensor& out, Tensor& k_cache, Tensor& v_cache, const Tensor& qkv,
                              const AttentionShape& shape, std::int64_t offset);

// ---- gemm.cpp ----
template <class Real>
void gemm(Tensor& out, const Tensor& a, bool a_transposed, const Tensor& b, bool b_transposed, bool accumulate);
template <class Real>
void gemm_quantized(Tensor& out, const QTensor& a, const QTensor& b, bool accumulate);
template <class Real>
QTensor quantize(const Tensor& x, bool transpose, const QuantizerSpec& spec, const Rotation& rotation,
                 const RandomContext& random);
QTensor requantize_transposed(const QTensor& q, const QuantizerSpec& spec, const Rotation& rotation,
                              const RandomContext& random);
QTensor transpose_square_blocks(const QTensor& q);
template <class Real>
void apply_trust_mask_and_unrotate(Tensor& g, const QTensor& q, const Rotation& rotation);
const QuantizedTensor& host_quantized(const QTensor& q);

// ---- optimizer.cpp ----
template <class Real>
double sum_of_squares(const Tensor& t);
template <class Real>
bool all_finite(const Tensor& t);
template <class Real>
void adamw_step(Tensor& params, Tensor& params_bf16, const Tensor& grads, Tensor& m, Tensor& v,
                const std::vector<ParameterSegment>& segments, const AdamWStep& hp, Tensor& status);
template <class Real>
void gradient_squares(const Tensor& grads, const std::vector<ParameterSegment>& segments, Tensor& status);
template <class Real>
void adamw_update(Tensor& params, Tensor& params_bf16, const Tensor& grads, Tensor& m, Tensor& v,
                  const std::vector<ParameterSegment>& segments, const AdamWStep& hp, Tensor& status);

}  // namespace quartet::cpu

// The CPU backend: memory on the host heap, every operation from cpu_ops.h.
#include <fmt/format.h>

#include <cstdlib>
#include <cstring>
#include <new>

#include <unistd.h>

#include "backend/cpu/ops.h"
#include "quartet/error.h"

namespace quartet {

namespace cpu {
namespace {

template <class Real>
class CpuBackend final : public Backend {
 public:
  std::string name() const override { return std::is_same_v<Real, double> ? "cpu-fp64-reference" : "cpu"; }
  Device device() const override { return Device::cpu; }
  DType activation_dtype() const override { return std::is_same_v<Real, double> ? DType::f64 : DType::bf16; }
  DType param_dtype() const override { return dtype_of<Real>(); }
  std::int64_t memory_bytes() const override {
    const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGE_SIZE);
    return pages > 0 && page > 0 ? static_cast<std::int64_t>(pages) * page : 0;
  }

  Tensor empty(const Shape& shape, DType dtype) override {
    for (std::int64_t d : shape) {
      if (d < 0) throw Error(fmt::format("cannot allocate a tensor of shape {}", shape_string(shape)));
    }
    const std::size_t bytes = static_cast<std::size_t>(shape_numel(shape)) * dtype_size(dtype);
    void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64 + 64);
    if (p == nullptr) throw std::bad_alloc();
    return Tensor(std::shared_ptr<void>(p, std::free), shape, dtype, Device::cpu);
  }

  void fill(Tensor& t, double value) override {
    if (t.dtype() == DType::i32 || t.dtype() == DType::u8) {
      upload(t, std::vector<double>(static_cast<std::size_t>(t.numel()), value));
      return;
    }
    Out<Real> out(t, false);
    for (std::int64_t i = 0; i < t.numel(); ++i) out[i] = static_cast<Real>(value);
    out.commit();
  }

  void upload(Tensor& dst, const std::vector<double>& values) override {
    if (static_cast<std::int64_t>(values.size()) != dst.numel()) {
      throw Error(fmt::format("upload: {} values for a tensor of shape {}", values.size(), shape_string(dst.shape())));
    }
    if (dst.dtype() == DType::i32) {
      std::int32_t* p = dst.data<std::int32_t>();
      for (std::size_t i = 0; i < values.size(); ++i) p[i] = static_cast<std::int32_t>(values[i]);
    } else if (dst.dtype() == DType::u8) {
      std::uint8_t* p = dst.data<std::uint8_t>();
      for (std::size_t i = 0; i < values.size(); ++i) p[i] = static_cast<std::uint8_t>(values[i]);
    } else {
      write_tensor(dst, values.data());
    }
  }

  std::vector<double> download(const Tensor& src) override {
    std::vector<double> out(static_cast<std::size_t>(src.numel()));
    if (src.dtype() == DType::i32) {
      const std::int32_t* p = src.data<std::int32_t>();
      for (std::size_t i = 0; i < out.size(); ++i) out[i] = p[i];
    } else if (src.dtype() == DType::u8) {
      const std::uint8_t* p = src.data<std::uint8_t>();
      for (std::size_t i = 0; i < out.size(); ++i) out[i] = p[i];
    } else {
      read_tensor(src, out.data());
    }
    return out;
  }

  void upload_tokens(Tensor& dst, const std::vector<std::int32_t>& tokens) override {
    dst.expect("upload_tokens", {static_cast<std::int64_t>(tokens.size())}, DType::i32);
    std::memcpy(dst.data<std::int32_t>(), tokens.data(), tokens.size() * sizeof(std::int32_t));
  }

  void copy(Tensor& dst, const Tensor& src) override {
    if (dst.numel() != src.numel()) {
      throw Error(fmt::format("copy: shapes {} and {} differ in size", shape_string(dst.shape()), shape_string(src.shape())));
    }
    if (dst.dtype() == src.dtype()) {
      std::memcpy(dst.raw(), src.raw(), src.bytes());
      return;
    }
    const In<Real> in(src);
    write_tensor(dst, in.data());
  }

  void embedding_forward(Tensor& out, const Tensor& tokens, const Tensor& table) override {
    cpu::embedding_forward<Real>(out, tokens, table);
  }
  void embedding_backward(Tensor& dtable, const Tensor& tokens, const Tensor& dout) override {
    cpu::embedding_backward<Real>(dtable, tokens, dout);
  }
  void rmsnorm_forward(Tensor& out, Tensor& rstd, const Tensor& x, const Tensor& weight, double eps) override {
    cpu::rmsnorm_forward<Real>(out, rstd, x, weight, eps);
  }
  void residual_rmsnorm_forward(Tensor& sum, Tensor& out, Tensor& rstd, const Tensor& x, const Tensor& y,
                                const Tensor& weight, double eps) override {
    cpu::residual_rmsnorm_forward<Real>(sum, out, rstd, x, y, weight, eps);
  }
  void rmsnorm_backward(Tensor& dx, Tensor& dweight, const Tensor& dout, const Tensor& x, const Tensor& weight,
                        const Tensor& rstd, bool accumulate_dx) override {
    cpu::rmsnorm_backward<Real>(dx, dweight, dout, x, weight, rstd, accumulate_dx);
  }
  void attention_forward(Tensor& out, AttentionSaved& saved, const Tensor& qkv, const AttentionShape& shape) override {
    cpu::attention_forward<Real>(out, saved, qkv, shape);
  }
  void attention_backward(Tensor& dqkv, const Tensor& dout, const Tensor& qkv, const AttentionSaved& saved,
                          const AttentionShape& shape) override {
    cpu::attention_backward<Real>(dqkv, dout, qkv, saved, shape);
  }
  void attention_forward_cached(Tensor& out, Tensor& k_cache, Tensor& v_cache, const Tensor& qkv,
                                const AttentionShape& shape, std::int64_t offset) override {
    cpu::attention_forward_cached<Real>(out, k_cache, v_cache, qkv, shape, offset);
  }
  void swiglu_forward(Tensor& out, const Tensor& gate_up) override { cpu::swiglu_forward<Real>(out, gate_up); }
  void swiglu_backward(Tensor& dgate_up, const Tensor& dout, const Tensor& gate_up) override {
    cpu::swiglu_backward<Real>(dgate_up, dout, gate_up);
  }
  void add_inplace(Tensor& a, const Tensor& b) override { cpu::add_inplace<Real>(a, b); }
  void cross_entropy(Tensor& dlogits, const Tensor& logits, const Tensor& targets, std::int64_t classes,
                     double grad_scale, Tensor& loss_sum) override {
    cpu::cross_entropy<Real>(dlogits, logits, targets, classes, grad_scale, loss_sum);
  }

  void gemm(Tensor& out, const Tensor& a, bool a_transposed, const Tensor& b, bool b_transposed,
            bool accumulate) override {
    cpu::gemm<Real>(out, a, a_transposed, b, b_transposed, accumulate);
  }
  void gemm_quantized(Tensor& out, const QTensor& a, const QTensor& b, bool accumulate) override {
    cpu::gemm_quantized<Real>(out, a, b, accumulate);
  }
  QTensor quantize(const Tensor& x, bool transpose, const QuantizerSpec& spec, const Rotation& rotation,
                   const RandomContext& random) override {
    return cpu::quantize<Real>(x, transpose, spec, rotation, random);
  }
  QTensor requantize_transposed(const QTensor& q, const QuantizerSpec& spec, const Rotation& rotation,
                                const RandomContext& random) override {
    return cpu::requantize_transposed(q, spec, rotation, random);
  }
  QTensor transpose_square_blocks(const QTensor& q) override { return cpu::transpose_square_blocks(q); }
  void apply_trust_mask_and_unrotate(Tensor& g, const QTensor& q, const Rotation& rotation) override {
    cpu::apply_trust_mask_and_unrotate<Real>(g, q, rotation);
  }
  QuantizedTensor download_quantized(const QTensor& q, ScaleLayout layout) override {
    return with_scale_layout(host_quantized(q), layout);
  }

  double sum_of_squares(const Tensor& t) override { return cpu::sum_of_squares<Real>(t); }
  bool all_finite(const Tensor& t) override { return cpu::all_finite<Real>(t); }
  void adamw_step(Tensor& params, Tensor& params_bf16, const Tensor& grads, Tensor& m, Tensor& v,
                  const std::vector<ParameterSegment>& segments, const AdamWStep& hp, Tensor& status) override {
    cpu::adamw_step<Real>(params, params_bf16, grads, m, v, segments, hp, status);
  }
  void gradient_squares(const Tensor& grads, const std::vector<ParameterSegment>& segments, Tensor& status) override {
    cpu::gradient_squares<Real>(grads, segments, status);
  }
  void adamw_update(Tensor& params, Tensor& params_bf16, const Tensor& grads, Tensor& m, Tensor& v,
                    const std::vector<ParameterSegment>& segments, const AdamWStep& hp, Tensor& status) override {
    cpu::adamw_update<Real>(params, params_bf16, grads, m, v, segments, hp, status);
  }
};

}  // namespace
}  // namespace cpu

std::unique_ptr<Backend> make_cpu_backend() { return std::make_unique<cpu::CpuBackend<float>>(); }
std::unique_ptr<Backend> make_cpu_reference_backend() { return std::make_unique<cpu::CpuBackend<double>>(); }

}  // namespace quartet

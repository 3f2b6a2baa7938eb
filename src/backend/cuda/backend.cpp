// The CUDA backend: device memory, the quantization kernels (quantize.cu), cuBLASLt GEMMs
// (gemm.cpp), the model and optimizer kernels (ops.h) behind the Backend interface. Nothing here
// synchronises the host in the training step: errors found in data are recorded on the device
// (device_errors.h, quantize.h) and raised by raise_pending_errors().
#include <cuda_runtime_api.h>
#include <dlfcn.h>
#include <fmt/format.h>

#include <bit>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device_memory.h"
#include "backend/cuda/elementwise.h"
#include "backend/cuda/env_switch.h"
#include "backend/cuda/gemm.h"
#include "backend/cuda/gemm_fp4_operand.h"
#include "backend/cuda/device_errors.h"
#include "backend/cuda/op_profiler.h"
#include "backend/cuda/ops.h"
#include "backend/cuda/pinned_staging.h"
#include "backend/cuda/quantize.h"
#include "backend/cuda/queued_read.h"
#include "quartet/backend/cuda.h"
#include "quartet/error.h"
#include "quartet/numerics/bf16.h"

namespace quartet {

namespace cuda {
namespace {

const DeviceQuantized& unwrap(const QTensor& q) {
  if (!q.defined()) throw Error("a quantized operand is missing");
  return *static_cast<const DeviceQuantized*>(q.impl.get());
}

QTensor wrap(DeviceQuantized d) {
  QTensor q;
  q.rows = d.rows;
  q.cols = d.cols;
  q.format = d.format;
  q.rotation_size = d.rotation_size;
  q.square_blocks = d.square_blocks;
  q.bytes = d.code_bytes() + d.scale_bytes() + d.mask_bytes() + sizeof(float);
  q.impl = std::make_shared<const DeviceQuantized>(std::move(d));
  return q;
}

void expect_device(const Tensor& t, const char* what) {
  if (!t.defined()) throw Error(fmt::format("{}: the tensor is undefined", what));
  if (t.device() != Device::cuda) throw Error(fmt::format("{}: the CUDA backend got a CPU tensor", what));
}

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(const CudaBackendOptions& options) {
    int device = 0;
    QUARTET_CUDA_CHECK(cudaGetDevice(&device));
    cudaDeviceProp prop{};
    QUARTET_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
    keep_freed_memory_pooled();
    // The NVFP4 GEMM path is chosen once, by asking cuBLASLt (numerics.md §7), and named in
    // the backend's name, which the trainer logs.
    native_fp4_ = gemm_.native_nvfp4() && std::getenv("QUARTET_EMULATE_FP4_GEMM") == nullptr;
    fused_dequantize_ = options.fused_dequantize && !native_fp4_;
    reference_attention_ = options.reference_attention || std::getenv("QUARTET_REFERENCE_ATTENTION") != nullptr;
    name_ = fmt::format("cuda ({}; NVFP4 GEMM: {}{})", prop.name,
                        native_fp4_ ? "native cuBLASLt block-scaled FP4" : "exact emulation, BF16 tensor cores",
                        reference_attention_ ? "; reference attention" : "");
    constants_ = device_alloc(3 * sizeof(float));
    const float values[3] = {0.0f, 1.0f, 0.0f};
    QUARTET_CUDA_CHECK(cudaMemcpy(constants_.get(), values, sizeof(values), cudaMemcpyHostToDevice));
  }

  std::string name() const override { return name_; }
  Device device() const override { return Device::cuda; }
  DType activation_dtype() const override { return DType::bf16; }
  DType param_dtype() const override { return DType::f32; }
  // BF16 rows of 256 bytes: what cuBLASLt's TMA kernels need (16-byte aligned strides) and a
  // whole number of their tiles.
  std::int64_t preferred_gemm_multiple() const override { return 128; }
  std::int64_t memory_bytes() const override {
    std::size_t free = 0, total = 0;
    QUARTET_CUDA_CHECK(cudaMemGetInfo(&free, &total));
    return static_cast<std::int64_t>(total);
  }

  Tensor empty(const Shape& shape, DType dtype) override {
    for (std::int64_t d : shape) {
      if (d < 0) throw Error(fmt::format("cannot allocate a tensor of shape {}", shape_string(shape)));
    }
    return Tensor(device_alloc(static_cast<std::size_t>(shape_numel(shape)) * dtype_size(dtype)), shape, dtype, Device::cuda);
  }

  void fill(Tensor& t, double value) override {
    QUARTET_OP_SCOPE("fill");
    expect_device(t, "fill");
    cuda::fill(t.raw(), t.dtype(), t.numel(), static_cast<float>(value), stream_);
  }

  void upload(Tensor& dst, const std::vector<double>& values) override {
    expect_device(dst, "upload");
    if (static_cast<std::int64_t>(values.size()) != dst.numel()) {
      throw Error(fmt::format("upload: {} values for a tensor of shape {}", values.size(), shape_string(dst.shape())));
    }
    std::vector<unsigned char> host(dst.bytes());
    for (std::size_t i = 0; i < values.size(); ++i) {
      switch (dst.dtype()) {
        case DType::f32: reinterpret_cast<float*>(host.data())[i] = static_cast<float>(values[i]); break;
        case DType::bf16: reinterpret_cast<std::uint16_t*>(host.data())[i] = bf16_bits(static_cast<float>(values[i])); break;
        case DType::i32: reinterpret_cast<std::int32_t*>(host.data())[i] = static_cast<std::int32_t>(values[i]); break;
        case DType::u8: host[i] = static_cast<unsigned char>(values[i]); break;
        case DType::f64: reinterpret_cast<double*>(host.data())[i] = values[i]; break;
      }
    }
    QUARTET_CUDA_CHECK(cudaMemcpy(dst.raw(), host.data(), host.size(), cudaMemcpyHostToDevice));
  }

  std::vector<double> download(const Tensor& src) override {
    expect_device(src, "download");
    std::vector<unsigned char> host(src.bytes());
    QUARTET_CUDA_CHECK(cudaMemcpy(host.data(), src.raw(), host.size(), cudaMemcpyDeviceToHost));
    return cuda::values_from_bytes(host.data(), src.dtype(), src.numel());
  }

  std::unique_ptr<QueuedRead> make_queued_read(std::int64_t max_bytes) override {
    return cuda::make_queued_read(max_bytes, stream_);
  }
  std::unique_ptr<DeviceMark> make_device_mark() override { return cuda::make_device_mark(stream_); }

  void upload_tokens(Tensor& dst, const std::vector<std::int32_t>& tokens) override {
    QUARTET_OP_SCOPE("upload_tokens");
    expect_device(dst, "upload_tokens");
    dst.expect("upload_tokens", {static_cast<std::int64_t>(tokens.size())}, DType::i32);
    staging_.upload(dst.raw(), tokens.data(), tokens.size() * sizeof(std::int32_t), stream_);
  }

  void copy(Tensor& dst, const Tensor& src) override {
    QUARTET_OP_SCOPE("copy");
    expect_device(dst, "copy");
    expect_device(src, "copy");
    if (dst.numel() != src.numel()) {
      throw Error(fmt::format("copy: shapes {} and {} differ in size", shape_string(dst.shape()), shape_string(src.shape())));
    }
    if (dst.dtype() == src.dtype()) {
      QUARTET_CUDA_CHECK(cudaMemcpyAsync(dst.raw(), src.raw(), src.bytes(), cudaMemcpyDeviceToDevice, stream_));
    } else {
      cuda::convert(src.raw(), src.dtype(), dst.raw(), dst.dtype(), src.numel(), stream_);
    }
  }

  // ---- model operations (ops.h) ----
  void embedding_forward(Tensor& out, const Tensor& tokens, const Tensor& table) override {
    QUARTET_OP_SCOPE("embedding_forward");
    cuda::embedding_forward(out, tokens, table, stream_);
  }
  void embedding_backward(Tensor& dtable, const Tensor& tokens, const Tensor& dout) override {
    QUARTET_OP_SCOPE("embedding_backward");
    cuda::embedding_backward(dtable, tokens, dout, stream_);
  }
  void rmsnorm_forward(Tensor& out, Tensor& rstd, const Tensor& x, const Tensor& weight, double eps) override {
    QUARTET_OP_SCOPE("rmsnorm_forward");
    cuda::rmsnorm_forward(out, rstd, x, weight, eps, stream_);
  }
  void residual_rmsnorm_forward(Tensor& sum, Tensor& out, Tensor& rstd, const Tensor& x, const Tensor& y,
                                const Tensor& weight, double eps) override {
    QUARTET_OP_SCOPE("residual_rmsnorm_forward");
    cuda::residual_rmsnorm_forward(sum, out, rstd, x, y, weight, eps, stream_);
  }
  void rmsnorm_backward(Tensor& dx, Tensor& dweight, const Tensor& dout, const Tensor& x, const Tensor& weight,
                        const Tensor& rstd, bool accumulate_dx) override {
    QUARTET_OP_SCOPE("rmsnorm_backward");
    cuda::rmsnorm_backward(dx, dweight, dout, x, weight, rstd, accumulate_dx, stream_);
  }
  // The fused kernels where they apply (BF16 tensors, head dims 64 and 128); the reference
  // kernels otherwise or when asked for.
  static constexpr int kFusedAttention = 1, kReferenceAttention = 2;
  // (The fused kernels read and write 16-byte vectors: views at odd offsets take the reference.)
  bool fused_attention(const AttentionShape& shape, const Tensor& qkv, const Tensor& activation) const {
    return !reference_attention_ && cuda::flash_attention_supports(shape) && qkv.dtype() == DType::bf16 &&
           activation.dtype() == DType::bf16 && aligned16(qkv.raw()) && aligned16(activation.raw());
  }
  void attention_forward(Tensor& out, AttentionSaved& saved, const Tensor& qkv, const AttentionShape& shape) override {
    QUARTET_OP_SCOPE("attention_forward");
    if (fused_attention(shape, qkv, out)) {
      cuda::attention_forward(out, saved, qkv, shape, stream_);
      saved.kernels = kFusedAttention;
    } else {
      cuda::attention_forward_reference(out, saved, qkv, shape, stream_);
      saved.kernels = kReferenceAttention;
    }
  }
  void attention_backward(Tensor& dqkv, const Tensor& dout, const Tensor& qkv, const AttentionSaved& saved,
                          const AttentionShape& shape) override {
    QUARTET_OP_SCOPE("attention_backward");
    if (saved.kernels == kFusedAttention) {
      cuda::attention_backward(dqkv, dout, qkv, saved, shape, stream_);
    } else if (saved.kernels == kReferenceAttention) {
      cuda::attention_backward_reference(dqkv, dout, qkv, saved, shape, stream_);
    } else {
      throw Error("attention backward: the GPU's forward pass saved nothing for it");
    }
  }
  // BF16 keys and values, what the fused kernels compute scores from.
  DType kv_cache_dtype() const override { return DType::bf16; }
  void attention_forward_cached(Tensor& out, Tensor& k_cache, Tensor& v_cache, const Tensor& qkv,
                                const AttentionShape& shape, std::int64_t offset) override {
    QUARTET_OP_SCOPE("attention_forward_cached");
    cuda::attention_forward_cached(out, k_cache, v_cache, qkv, shape, offset, stream_);
  }
  void swiglu_forward(Tensor& out, const Tensor& gate_up) override {
    QUARTET_OP_SCOPE("swiglu_forward");
    cuda::swiglu_forward(out, gate_up, stream_);
  }
  void swiglu_backward(Tensor& dgate_up, const Tensor& dout, const Tensor& gate_up) override {
    QUARTET_OP_SCOPE("swiglu_backward");
    cuda::swiglu_backward(dgate_up, dout, gate_up, stream_);
  }
  void add_inplace(Tensor& a, const Tensor& b) override {
    QUARTET_OP_SCOPE("add_inplace");
    expect_device(a, "add");
    expect_device(b, "add");
    if (a.shape() != b.shape()) {
      throw Error(fmt::format("add: shapes {} and {} differ", shape_string(a.shape()), shape_string(b.shape())));
    }
    cuda::add_inplace(a.raw(), a.dtype(), b.raw(), b.dtype(), a.numel(), stream_);
  }
  void cross_entropy(Tensor& dlogits, const Tensor& logits, const Tensor& targets, std::int64_t classes,
                     double grad_scale, Tensor& loss_sum) override {
    QUARTET_OP_SCOPE("cross_entropy");
    cuda::cross_entropy(dlogits, logits, targets, classes, grad_scale, loss_sum, stream_);
  }

  // ---- GEMMs ----
  void gemm(Tensor& out, const Tensor& a, bool at, const Tensor& b, bool bt, bool accumulate) override {
    QUARTET_OP_SCOPE(accumulate ? "gemm (accumulate: weight gradients)" : "gemm");
    expect_device(out, "gemm");
    if (a.ndim() != 2 || b.ndim() != 2 || out.ndim() != 2) throw Error("gemm: operands must be 2-D");
    const std::int64_t m = at ? a.dim(1) : a.dim(0), k = at ? a.dim(0) : a.dim(1);
    const std::int64_t n = bt ? b.dim(1) : b.dim(0), kb = bt ? b.dim(0) : b.dim(1);
    if (k != kb || out.dim(0) != m || out.dim(1) != n) {
      throw Error(fmt::format("gemm: A {}{} and B {}{} do not give out {}", shape_string(a.shape()), at ? "^T" : "",
                              shape_string(b.shape()), bt ? "^T" : "", shape_string(out.shape())));
    }
    const Tensor a16 = as_bf16(a), b16 = as_bf16(b);
    gemm_.run(out.raw(), out.dtype(), a16.raw(), at, b16.raw(), bt, m, n, k, one(), accumulate ? one() : zero(), stream_);
  }

  void gemm_quantized(Tensor& out, const QTensor& a, const QTensor& b, bool accumulate) override {
    QUARTET_OP_SCOPE("gemm_quantized");
    expect_device(out, "quantized gemm");
    const DeviceQuantized& qa = unwrap(a);
    const DeviceQuantized& qb = unwrap(b);
    if (qa.format != qb.format || qa.cols != qb.cols || qa.rotation_size != qb.rotation_size) {
      throw Error(fmt::format("gemm: operands differ in format, reduction length ({} vs {}) or rotation ({} vs {})",
                              qa.cols, qb.cols, qa.rotation_size, qb.rotation_size));
    }
    out.expect("quantized gemm output", {qa.rows, qb.rows}, out.dtype());
    float* const alpha = gemm_alpha();
    product(ptr<float>(qa.tensor_scale), ptr<float>(qb.tensor_scale), alpha, stream_);
    if (native_fp4_ && qa.format == ElementFormat::nvfp4 && qa.padded_cols % 32 == 0) {
      // The bytes the Hopper path is tested on: the same codes, the scales re-laid out.
      const auto sa = tiled_scales(qa, stream_), sb = tiled_scales(qb, stream_);
      if (gemm_.run_nvfp4(out.raw(), out.dtype(), qa.codes.get(), sa.get(), qb.codes.get(), sb.get(), qa.rows, qb.rows,
                          qa.padded_cols, alpha, accumulate ? one() : zero(), stream_)) {
        return;
      }
    }
    // A read as NVFP4 by the wgmma kernel (QUARTET_NVFP4_GEMM=fp4-operand, not yet the default):
    // only B's BF16 copy is used (made here: writes_gemm_copy), A's (if a quantizer wrote one
    // before the switch was set) is released unread.
    if (qa.format == ElementFormat::nvfp4 && !qa.square_blocks && reads_fp4_operand() &&
        gemm_fp4_operand_fits(qa.rows, qb.rows, qa.padded_cols)) {
      const std::shared_ptr<void> db = take_dequantized(qb);
      qa.dequantized = nullptr;
      gemm_fp4_operand(out.raw(), out.dtype(), qa.codes.get(), qa.scales.get(), db.get(), qa.rows, qb.rows,
                       qa.padded_cols, alpha, accumulate, stream_);
      return;
    }
    // Exact emulation: code x block scale is exact in BF16; alpha = t_A t_B in the epilogue.
    // An operand whose quantizer already wrote it in BF16 is taken from there (and released).
    const std::shared_ptr<void> da = take_dequantized(qa), db = take_dequantized(qb);
    gemm_.run(out.raw(), out.dtype(), da.get(), false, db.get(), false, qa.rows, qb.rows, qa.padded_cols,
              alpha, accumulate ? one() : zero(), stream_);
  }

  QTensor quantize(const Tensor& x, bool transpose, const QuantizerSpec& spec, const Rotation& rotation,
                   const RandomContext& random) override {
    QUARTET_OP_SCOPE("quantize");
    expect_device(x, "quantize");
    if (x.ndim() != 2) throw Error(fmt::format("quantize: expected a 2-D tensor, got {}", shape_string(x.shape())));
    return wrap(cuda::quantize(x.raw(), x.dtype(), x.dim(0), x.dim(1), transpose, spec, rotation, random, stream_,
                               writes_gemm_copy(spec)));
  }
  std::pair<QTensor, QTensor> quantize_both_ways(const Tensor& x, const QuantizerSpec& row_spec,
                                                 const Rotation& row_rotation, const RandomContext& row_random,
                                                 const QuantizerSpec& col_spec, const Rotation& col_rotation,
                                                 const RandomContext& col_random) override {
    QUARTET_OP_SCOPE("quantize_both_ways");
    expect_device(x, "quantize");
    if (x.ndim() != 2) throw Error(fmt::format("quantize: expected a 2-D tensor, got {}", shape_string(x.shape())));
    auto [rows, cols] = cuda::quantize_both_ways(x.raw(), x.dtype(), x.dim(0), x.dim(1), row_spec, row_rotation, row_random,
                                                 col_spec, col_rotation, col_random, stream_,
                                                 writes_gemm_copy(row_spec) && writes_gemm_copy(col_spec));
    return {wrap(std::move(rows)), wrap(std::move(cols))};
  }
  void drop_gemm_copy(const QTensor& q) override { unwrap(q).dequantized = nullptr; }
  QTensor requantize_transposed(const QTensor& q, const QuantizerSpec& spec, const Rotation& rotation,
                                const RandomContext& random) override {
    QUARTET_OP_SCOPE("requantize_transposed");
    return wrap(cuda::requantize_transposed(unwrap(q), spec, rotation, random, stream_, writes_gemm_copy(spec)));
  }
  QTensor transpose_square_blocks(const QTensor& q) override {
    QUARTET_OP_SCOPE("transpose_square_blocks");
    return wrap(cuda::transpose_square_blocks(unwrap(q), stream_));
  }
  void apply_trust_mask_and_unrotate(Tensor& g, const QTensor& q, const Rotation& rotation) override {
    QUARTET_OP_SCOPE("apply_trust_mask_and_unrotate");
    expect_device(g, "trust mask");
    const DeviceQuantized& d = unwrap(q);
    g.expect("trust-mask gradient", {d.rows, d.cols}, g.dtype());
    cuda::apply_trust_mask_and_unrotate(g.raw(), g.dtype(), d, rotation, stream_);
  }
  QuantizedTensor download_quantized(const QTensor& q, ScaleLayout layout) override {
    return cuda::download(unwrap(q), layout);
  }
  void raise_pending_errors() override {
    cuda::raise_data_errors();
    cuda::raise_pending_errors();
  }

  std::string describe_non_finite_input(double key) override {
    if (key == 0) return "";
    return cuda::describe_non_finite_key(std::bit_cast<unsigned long long>(key));
  }

  // ---- optimizer ----
  double sum_of_squares(const Tensor& t) override {
    expect_device(t, "sum_of_squares");
    return cuda::sum_of_squares(t.raw(), t.dtype(), t.numel(), stream_).sum;
  }
  bool all_finite(const Tensor& t) override {
    expect_device(t, "all_finite");
    return cuda::sum_of_squares(t.raw(), t.dtype(), t.numel(), stream_).non_finite == 0;
  }
  void adamw_step(Tensor& params, Tensor& params_bf16, const Tensor& grads, Tensor& m, Tensor& v,
                  const std::vector<ParameterSegment>& segments, const AdamWStep& hp, Tensor& status) override {
    QUARTET_OP_SCOPE("adamw_step");
    cuda::adamw_step(params, params_bf16, grads, m, v, segments, hp, status, cuda::non_finite_record(), stream_);
  }
  cudaStream_t stream() const { return stream_; }

  void gradient_squares(const Tensor& grads, const std::vector<ParameterSegment>& segments, Tensor& status) override {
    QUARTET_OP_SCOPE("gradient_squares");
    cuda::gradient_squares(grads, segments, status, cuda::non_finite_record(), stream_);
  }
  void adamw_update(Tensor& params, Tensor& params_bf16, const Tensor& grads, Tensor& m, Tensor& v,
                    const std::vector<ParameterSegment>& segments, const AdamWStep& hp, Tensor& status) override {
    QUARTET_OP_SCOPE("adamw_update");
    cuda::adamw_update(params, params_bf16, grads, m, v, segments, hp, status, stream_);
  }

 private:
  const float* zero() const { return ptr<float>(constants_); }
  const float* one() const { return ptr<float>(constants_) + 1; }
  // A quantized GEMM's alpha (the operands' tensor scales multiplied), written by a kernel just
  // before the GEMM that reads it: all the backend's work is on one stream, so one slot serves
  // every call, and no allocation is made per GEMM.
  float* gemm_alpha() const { return ptr<float>(constants_) + 2; }

  // A BF16 view of a GEMM operand: activations already are; FP32 weights are rounded.
  Tensor as_bf16(const Tensor& t) {
    expect_device(t, "gemm operand");
    if (t.dtype() == DType::bf16) return t;
    Tensor c = empty(t.shape(), DType::bf16);
    cuda::convert(t.raw(), t.dtype(), c.raw(), DType::bf16, t.numel(), stream_);
    return c;
  }

  // Whether a quantizer writes its operand's BF16 copy for the emulated GEMM as it goes. Not for
  // NVFP4 operands while the GEMM reads its first operand in NVFP4 (QUARTET_NVFP4_GEMM=fp4-operand):
  // the quantizer cannot tell which side of a GEMM its operand will be, so none writes a copy,
  // and the second operand's is made by a dequantization pass when the GEMM needs it. The copies
  // of the first operands (X forward, E and Eᵀ backward: most of the elements) are not written
  // at all. A GEMM that falls back to the copies path under the switch (A in square blocks, a
  // reduction not a multiple of 64) then pays a dequantization pass for each operand.
  bool writes_gemm_copy(const QuantizerSpec& spec) const {
    return fused_dequantize_ && (quantizer_format(spec.kind) != ElementFormat::nvfp4 || !reads_fp4_operand());
  }
  // QUARTET_NVFP4_GEMM (read at every call, so that tests and benchmarks can compare both paths
  // in one process): "fp4-operand", or "copies" (the default).
  static bool reads_fp4_operand() { return !env_keeps_usual("QUARTET_NVFP4_GEMM", "copies", "fp4-operand"); }

  // The operand as BF16 e2m1 x block scale: what its quantizer wrote, or a dequantization pass.
  std::shared_ptr<void> take_dequantized(const DeviceQuantized& q) {
    if (q.dequantized) return std::exchange(q.dequantized, nullptr);
    auto values = device_alloc(static_cast<std::size_t>(q.rows * q.padded_cols) * sizeof(std::uint16_t));
    dequantize_block_scaled_bf16(q, values.get(), stream_);
    return values;
  }

  std::string name_;
  cudaStream_t stream_ = nullptr;
  std::shared_ptr<void> constants_;  // 0.0f, 1.0f for alpha and beta; the quantized GEMMs' alpha
  Gemm gemm_;
  bool native_fp4_ = false;
  bool fused_dequantize_ = false;  // quantizers write BF16 operands for the emulated GEMM
  bool reference_attention_ = false;
  PinnedStaging staging_;
};

}  // namespace
}  // namespace cuda

bool cuda_built() { return true; }

std::vector<CudaOpTime> cuda_op_profile(bool reset) { return cuda::OpProfiler::instance().take(reset); }

bool cuda_available() { return cuda_device_count() > 0; }

int cuda_device_count() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess ? count : 0;
}

namespace {

// The CUDA runtime reports a machine with no NVIDIA driver at all (no libcuda.so.1) as "CUDA
// driver version is insufficient", which sends users to upgrade a driver they do not have.
bool cuda_driver_installed() {
  void* driver = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL);
  if (driver != nullptr) dlclose(driver);
  return driver != nullptr;
}

}  // namespace

std::string cuda_device_description() {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e == cudaSuccess && count == 0) return "no CUDA driver/GPU found (the driver sees no device)";
  if (e == cudaErrorNoDevice || (e == cudaErrorInsufficientDriver && !cuda_driver_installed())) {
    return "no CUDA driver/GPU found";
  }
  if (e != cudaSuccess) return fmt::format("no usable GPU ({})", cudaGetErrorString(e));
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) return "a GPU whose properties cannot be read";
  return fmt::format("{} (sm_{}{}, {} SMs, {:.0f} GiB)", prop.name, prop.major, prop.minor, prop.multiProcessorCount,
                     static_cast<double>(prop.totalGlobalMem) / (1 << 30));
}

std::unique_ptr<Backend> make_cuda_backend(const CudaBackendOptions& options) {
  if (!cuda_available()) throw Error("--device cuda: " + cuda_device_description());
  return std::make_unique<cuda::CudaBackend>(options);
}

void cuda_select_device(int index) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    throw Error(fmt::format("LOCAL_RANK {} asks for a GPU, but none is usable here: {}", index, cuda_device_description()));
  }
  if (index < 0 || index >= count) {
    throw Error(fmt::format("LOCAL_RANK {} names GPU {}, but this node has {} GPU{} (0..{}): start at most {} rank{} per "
                            "node",
                            index, index, count, count == 1 ? "" : "s", count - 1, count, count == 1 ? "" : "s"));
  }
  QUARTET_CUDA_CHECK(cudaSetDevice(index));
}

void* cuda_backend_stream(Backend& backend) {
  auto* cuda_backend = dynamic_cast<cuda::CudaBackend*>(&backend);
  if (cuda_backend == nullptr) throw Error(fmt::format("{} is not a CUDA backend", backend.name()));
  return static_cast<void*>(cuda_backend->stream());
}

}  // namespace quartet

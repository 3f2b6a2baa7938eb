// The operations a model and a trainer need, implemented once per device (architecture.md,
// "one specification, two backends"). The model, the recipes and the trainer are written
// against this interface only.
//
// Conventions:
//  * Activations are 2-D [tokens, features], row-major, in activation_dtype(); parameters and
//    their gradients are in param_dtype(). The CPU backend keeps FP32 and rounds activations
//    to BF16 wherever the GPU stores BF16, so the quantizers see the same inputs; its
//    double-precision variant rounds nothing (the reference for gradient checks).
//  * Operations that produce a parameter gradient accumulate into it (+=), so gradient
//    accumulation over micro-batches needs no extra pass; everything else overwrites.
//  * GEMMs follow numerics.md §7: both operands K-contiguous ("TN"), FP32 accumulation.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "quartet/backend/tensor.h"
#include "quartet/numerics/hadamard.h"
#include "quartet/numerics/philox.h"
#include "quartet/numerics/quantized_tensor.h"
#include "quartet/numerics/quantizer.h"

namespace quartet {

// A quantized GEMM operand owned by a backend (a host QuantizedTensor on the CPU).
struct QTensor {
  std::shared_ptr<const void> impl;
  std::int64_t rows = 0;
  std::int64_t cols = 0;  // the reduction dimension
  ElementFormat format = ElementFormat::nvfp4;
  int rotation_size = 0;
  bool square_blocks = false;
  std::size_t bytes = 0;  // memory held: codes + scales + trust mask + tensor scale

  bool defined() const { return impl != nullptr; }
};

struct AttentionShape {
  std::int64_t batch = 0;
  std::int64_t seq = 0;
  std::int64_t heads = 0;
  std::int64_t kv_heads = 0;
  std::int64_t head_dim = 0;
  double rope_theta = 10000.0;

  std::int64_t tokens() const { return batch * seq; }
  std::int64_t q_width() const { return heads * head_dim; }
  std::int64_t qkv_width() const { return (heads + 2 * kv_heads) * head_dim; }
};

// What attention keeps for its backward pass (backend-specific); `kernels` says which of a
// backend's implementations made it, so the backward pass takes the same one.
struct AttentionSaved {
  std::shared_ptr<void> impl;
  int kernels = 0;
};

// The flat parameter, gradient and moment buffers of a model (FP32, equal sizes) are cut into
// segments, one per parameter tensor; weight decay applies to the segments that say so.
struct ParameterSegment {
  std::int64_t offset = 0;  // in elements
  std::int64_t count = 0;
  bool decay = false;
};

// Throws Error unless every segment lies within [0, elements) and no two overlap (an element
// updated twice, or by two blocks at once on a GPU). For backends' adamw_step.
void check_parameter_segments(const std::vector<ParameterSegment>& segments, std::int64_t elements);

// Throws Error naming what is wrong with the arguments of Backend::attention_forward_cached
// (the shape, a tensor's shape or dtype, positions beyond the cache's capacity).
void check_cached_attention(const Tensor& out, const Tensor& k_cache, const Tensor& v_cache, const Tensor& qkv,
                            const AttentionShape& shape, std::int64_t offset, DType cache_dtype);

// One AdamW step (decoupled weight decay) with global gradient-norm clipping.
struct AdamWStep {
  double lr = 0;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0;
  std::int64_t step = 1;       // 1-based, for bias correction
  double max_grad_norm = 1.0;  // clip the gradient to this global norm
};

// The device-resident scalars of one training step, an f64 tensor of kStepSlots elements that
// the host reads with one download when it logs the step.
enum StepSlot : int {
  kStepLoss = 0,           // summed loss of the step's micro-batches (cross_entropy adds to it)
  kStepGradNorm = 1,       // global gradient norm before clipping (written by adamw_step)
  kStepApplied = 2,        // 1 if adamw_step updated the parameters, 0 if it skipped the step
  kStepNonFiniteInput = 3, // 1 if a quantizer met a non-finite input
  kStepNonFiniteKey = 4,   // where (a device's record, for describe_non_finite_input), else 0
  kStepSlots = 5,
};

// A read of a small tensor queued behind the work queued so far, collected later: the host
// waits for that work only, not for what it queued after (the next training step).
class QueuedRead {
 public:
  virtual ~QueuedRead() = default;
  // Queues the read of t's current values (at most the bytes the reader was made for).
  virtual void queue(const Tensor& t) = 0;
  // The values of the last queue(), once the work before it is done.
  virtual std::vector<double> wait() = 0;
};

// A point in the device's queue of work, timed by the device when it gets there: the time the
// device took between two marks, whatever the host did meanwhile (training throughput; the host
// runs ahead of the device, so its own clock says when it queued work, not when it ran).
class DeviceMark {
 public:
  virtual ~DeviceMark() = default;
  // Queues the mark behind the work queued so far (again: moves it there).
  virtual void record() = 0;
  // Seconds from `earlier` to this mark, both recorded, earlier first on the same backend;
  // waits until the device has reached this mark.
  virtual double seconds_since(const DeviceMark& earlier) = 0;
};

// Error unless t fits a reader made for max_bytes.
void check_queued_read_size(const Tensor& t, std::int64_t max_bytes);

class Backend {
 public:
  virtual ~Backend() = default;

  virtual std::string name() const = 0;
  virtual Device device() const = 0;
  virtual DType activation_dtype() const = 0;
  virtual DType param_dtype() const = 0;

  // ---- memory ----
  virtual Tensor empty(const Shape& shape, DType dtype) = 0;
  Tensor zeros(const Shape& shape, DType dtype);
  virtual void fill(Tensor& t, double value) = 0;
  // Host <-> tensor copies convert between double and the tensor's dtype (i32 tensors take
  // integral values). They are for set-up, tests and checkpoints, not for the step loop.
  virtual void upload(Tensor& dst, const std::vector<double>& values) = 0;
  virtual std::vector<double> download(const Tensor& src) = 0;
  // A reusable reader of tensors of up to max_bytes (QueuedRead). Synchronous backends read at
  // queue() time, which is the same thing.
  virtual std::unique_ptr<QueuedRead> make_queued_read(std::int64_t max_bytes);
  // A DeviceMark. Synchronous backends (the work before a call is done when it returns) read
  // the host's clock at record(), which is the same thing.
  virtual std::unique_ptr<DeviceMark> make_device_mark();
  // Token ids to an i32 tensor. Asynchronous on a GPU (through pinned staging memory): the
  // vector may be reused as soon as the call returns.
  virtual void upload_tokens(Tensor& dst, const std::vector<std::int32_t>& tokens) = 0;
  virtual void copy(Tensor& dst, const Tensor& src) = 0;

  // ---- model operations ----
  // out[n] = table[tokens[n]]; dtable[tokens[n]] += dout[n], each row's additions in position
  // order (deterministic). A token outside the table is an error (at once on the CPU, by
  // raise_pending_errors() on a GPU, which makes that output row NaN and adds nothing for it).
  virtual void embedding_forward(Tensor& out, const Tensor& tokens, const Tensor& table) = 0;
  virtual void embedding_backward(Tensor& dtable, const Tensor& tokens, const Tensor& dout) = 0;

  // out = x / rms(x) * weight per row, rstd[n] = 1 / sqrt(mean(x^2) + eps).
  virtual void rmsnorm_forward(Tensor& out, Tensor& rstd, const Tensor& x, const Tensor& weight, double eps) = 0;
  // The residual add fused with the norm that follows it: sum = x + y (stored in sum's dtype),
  // then rmsnorm_forward(out, rstd, sum, weight, eps) of the stored sum.
  virtual void residual_rmsnorm_forward(Tensor& sum, Tensor& out, Tensor& rstd, const Tensor& x, const Tensor& y,
                                        const Tensor& weight, double eps) = 0;
  // dx (+)= d out / d x (added to dx's values when accumulate_dx: the residual stream's
  // gradient, rounded once); dweight += d out / d weight.
  virtual void rmsnorm_backward(Tensor& dx, Tensor& dweight, const Tensor& dout, const Tensor& x, const Tensor& weight,
                                const Tensor& rstd, bool accumulate_dx) = 0;

  // Causal self-attention with rotary embeddings (rotate-half convention) on a fused
  // [tokens, (heads + 2 kv_heads) * head_dim] q|k|v input; output [tokens, heads * head_dim].
  virtual void attention_forward(Tensor& out, AttentionSaved& saved, const Tensor& qkv, const AttentionShape& shape) = 0;
  virtual void attention_backward(Tensor& dqkv, const Tensor& dout, const Tensor& qkv, const AttentionSaved& saved,
                                  const AttentionShape& shape) = 0;

  // ---- sampling with a key/value cache (docs/sampling.md) ----
  // The element type of key/value caches: what this backend's attention computes scores from,
  // so that a cached pass repeats the uncached one's arithmetic (the CPU keeps rotated keys in
  // its working precision; the GPU's fused kernels read BF16).
  virtual DType kv_cache_dtype() const { return param_dtype(); }
  // Attention of shape.seq new positions per sequence, at positions offset .. offset + seq - 1,
  // against themselves and the positions before them: qkv holds the new positions' fused
  // q|k|v ([batch * seq, qkv_width]); their rotated keys and their values are first written
  // into the caches at rows offset .. offset + seq - 1 of each sequence; k_cache and v_cache
  // are [batch * capacity, kv_heads * head_dim] in kv_cache_dtype(), capacity >= offset + seq,
  // each sequence's rows contiguous. out [batch * seq, heads * head_dim] is what
  // attention_forward gives these positions over the whole sequence (the same arithmetic on
  // the CPU). Nothing is kept for a backward pass.
  virtual void attention_forward_cached(Tensor& out, Tensor& k_cache, Tensor& v_cache, const Tensor& qkv,
                                        const AttentionShape& shape, std::int64_t offset) = 0;

  // out = silu(gate) * up with gate_up = [gate | up] along features.
  virtual void swiglu_forward(Tensor& out, const Tensor& gate_up) = 0;
  virtual void swiglu_backward(Tensor& dgate_up, const Tensor& dout, const Tensor& gate_up) = 0;

  // a += b (the residual stream).
  virtual void add_inplace(Tensor& a, const Tensor& b) = 0;

  // Softmax cross-entropy over the first `classes` columns of [rows, columns] logits (columns
  // beyond are padding, e.g. a vocabulary rounded up for aligned GEMMs: they take no part and
  // get a zero gradient), for the rows whose target is >= 0 (rows of -1 are masked: no loss,
  // zero gradient). Adds the summed loss of those rows to loss_sum (an f64 tensor of one
  // element, on the device: nothing is read back) and writes dlogits = (softmax - onehot) *
  // grad_scale. dlogits may be the logits tensor itself (the gradient overwrites the logits in
  // place). A target >= classes is an error (raised at once on the CPU, by
  // raise_pending_errors() on a GPU, where it also leaves the row's loss NaN).
  virtual void cross_entropy(Tensor& dlogits, const Tensor& logits, const Tensor& targets, std::int64_t classes,
                             double grad_scale, Tensor& loss_sum) = 0;
  // The same over every column, returning the summed loss (one synchronisation: for tests and
  // evaluation tools).
  double cross_entropy_loss(Tensor& dlogits, const Tensor& logits, const Tensor& targets, double grad_scale);

  // The multiple of rows a GEMM operand runs fastest with: the model pads its vocabulary (the
  // LM head's rows and the logits' columns) to it. 1: no padding.
  virtual std::int64_t preferred_gemm_multiple() const { return 1; }

  // The memory this backend allocates from, in bytes (the machine's RAM, the GPU's memory): for
  // checking a model's size before anything is allocated. 0: unknown.
  virtual std::int64_t memory_bytes() const { return 0; }

  // ---- GEMMs ----
  // High precision: out[m][n] (+)= sum_k A[m][k] B[n][k], with A given as a [M, K] tensor or,
  // when a_transposed, as a [K, M] tensor (likewise B). Inputs are rounded to BF16 where the
  // GPU would run a BF16 GEMM (round_inputs_to_bf16).
  virtual void gemm(Tensor& out, const Tensor& a, bool a_transposed, const Tensor& b, bool b_transposed,
                    bool accumulate) = 0;

  // Quantized operands: out (+)= t_A t_B sum_k A[m][k] B[n][k].
  virtual void gemm_quantized(Tensor& out, const QTensor& a, const QTensor& b, bool accumulate) = 0;

  // Quantize x ([R, C], or its transpose when `transpose`: quantize x^T without
  // materialising it) along the reduction dimension.
  virtual QTensor quantize(const Tensor& x, bool transpose, const QuantizerSpec& spec, const Rotation& rotation,
                           const RandomContext& random) = 0;
  // Both quantizations of one tensor that a backward pass takes of its output gradient: x
  // row-wise (first) and x^T (second), exactly quantize(x, false, row_spec, row_rotation,
  // row_random) followed by quantize(x, true, col_spec, col_rotation, col_random), which is what
  // this default does. A backend may read x once for both where it has a kernel for the pair
  // (the GPU: MS-EDEN g16 from BF16 both ways); the results, non-finite errors included, are the
  // same bits either way.
  virtual std::pair<QTensor, QTensor> quantize_both_ways(const Tensor& x, const QuantizerSpec& row_spec,
                                                         const Rotation& row_rotation, const RandomContext& row_random,
                                                         const QuantizerSpec& col_spec, const Rotation& col_rotation,
                                                         const RandomContext& col_random);
  // A backend whose quantizers also write a copy of the operand for its GEMM (the emulated NVFP4
  // GEMM's BF16 values) frees it: for a quantized tensor that no GEMM will take.
  virtual void drop_gemm_copy(const QTensor&) {}
  // Dequantize q (in its rotated domain), transpose, rotate and quantize again (numerics of a
  // backward operand re-quantized from a forward one).
  virtual QTensor requantize_transposed(const QTensor& q, const QuantizerSpec& spec, const Rotation& rotation,
                                        const RandomContext& random) = 0;
  virtual QTensor transpose_square_blocks(const QTensor& q) = 0;
  // Quartet I: g <- (g * trust_mask(q)) H^T along the reduction dimension of q.
  virtual void apply_trust_mask_and_unrotate(Tensor& g, const QTensor& q, const Rotation& rotation) = 0;
  // Host copy of a quantized operand (tests, inspection), with its scales in `layout` (tiled:
  // the bytes a native block-scaled FP4 GEMM reads).
  virtual QuantizedTensor download_quantized(const QTensor& q, ScaleLayout layout = ScaleLayout::linear) = 0;

  // Errors met by asynchronous operations since the last call are thrown here: a non-finite
  // quantizer input as NonFiniteError, a token or target outside the vocabulary as Error (a
  // GPU records them on the device rather than synchronising every call). Synchronous
  // backends throw at once and have nothing pending. A non-finite input stays recorded (and
  // every adamw_step skips) until this call reports it.
  virtual void raise_pending_errors() {}
  // What status[kStepNonFiniteKey] of a skipped step says: the quantizer input that was not
  // finite ("" where the backend does not record; a synchronous one threw at once instead).
  // adamw_step takes the record into the step's status and clears it, so that a step queued
  // behind a skipped one decides on its own inputs.
  virtual std::string describe_non_finite_input(double key) { return key == 0 ? "" : "a non-finite quantizer input"; }

  // ---- optimizer ----
  // Sum of squares in double, deterministic (the same bits on every call).
  virtual double sum_of_squares(const Tensor& t) = 0;
  virtual bool all_finite(const Tensor& t) = 0;
  // One optimizer step over flat f32 buffers, decided on the device without a host round trip:
  //   norm = sqrt(sum of grads^2 over the segments), in double, deterministic;
  //   the step applies only if status[kStepLoss] and norm are finite and no quantizer met a
  //   non-finite input (status[kStepNonFiniteInput] tells); then, with
  //   g = grads * float(max_grad_norm / norm) when norm > max_grad_norm (else grads),
  //   per element in FP32 (unfused, as written):
  //     m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g g;
  //     p -= lr (m / c1 / (sqrt(v / c2) + eps) + wd p),  c1 = 1 - b1^step, c2 = 1 - b2^step
  //   (wd = weight_decay on segments with decay, else 0; b1, b2, lr, eps, wd, c1, c2 rounded
  //   to float), and params_bf16 (if defined: a bf16 buffer of params' size) = bf16(params)
  //   over the segments. status[kStepGradNorm], [kStepApplied], [kStepNonFiniteInput] are
  //   written; status[kStepLoss] is read.
  virtual void adamw_step(Tensor& params, Tensor& params_bf16, const Tensor& grads, Tensor& m, Tensor& v,
                          const std::vector<ParameterSegment>& segments, const AdamWStep& hp, Tensor& status) = 0;
  // adamw_step in two halves, for a sharded optimizer (train/sharded_optimizer.h) whose ranks
  // each hold a shard of the gradients: the halves' sums of squares are added over the ranks
  // (with the status slots) between them. adamw_step is exactly gradient_squares followed by
  // adamw_update on the same arguments, bit for bit.
  //  gradient_squares: status[kStepGradNorm] = the sum of grads^2 over the segments (double,
  //    deterministic, as adamw_step sums it); status[kStepNonFiniteInput] = 1 if a quantizer met
  //    a non-finite input since the last raise_pending_errors (a GPU's record), else 0.
  //  adamw_update: norm = sqrt(status[kStepGradNorm]); the step applies only if status[kStepLoss]
  //    and norm are finite and status[kStepNonFiniteInput] is 0; then as adamw_step.
  //    status[kStepGradNorm] and [kStepApplied] are written.
  virtual void gradient_squares(const Tensor& grads, const std::vector<ParameterSegment>& segments,
                                Tensor& status) = 0;
  virtual void adamw_update(Tensor& params, Tensor& params_bf16, const Tensor& grads, Tensor& m, Tensor& v,
                            const std::vector<ParameterSegment>& segments, const AdamWStep& hp, Tensor& status) = 0;
};

// The CPU backends: FP32 with BF16 activation storage (the reference the GPU is compared
// with), and a double-precision variant without any rounding (gradient checks).
std::unique_ptr<Backend> make_cpu_backend();
std::unique_ptr<Backend> make_cpu_reference_backend();

}  // namespace quartet

// The CUDA backend's model and optimizer operations (see Backend in backend.h for their
// contracts), one file each, named like their CPU twins in src/backend/cpu/: embedding.cu,
// rmsnorm.cu, swiglu.cu, cross_entropy.cu, attention.cu (fused flash attention) with
// attention_reference.cu (the straightforward kernels, kept as the reference path), and
// optimizer.cu. Every kernel is deterministic: no floating-point atomics, every reduction in a
// fixed order, so the same inputs give the same bits on every run. None synchronises the host.
#pragma once

#include <cuda_runtime_api.h>

#include <vector>

#include "quartet/backend/backend.h"

namespace quartet::cuda {

// ---- embedding.cu ----
// A token outside the table is recorded on the device (device_errors.h); its output row is NaN
// (so the step's loss is NaN and the step is skipped) and nothing is added for it (backward).
void embedding_forward(Tensor& out, const Tensor& tokens, const Tensor& table, cudaStream_t stream);
// Positions sorted by token (a stable device radix sort), then each distinct token's rows added
// in position order: deterministic, no atomics.
void embedding_backward(Tensor& dtable, const Tensor& tokens, const Tensor& dout, cudaStream_t stream);

// ---- rmsnorm.cu ----
void rmsnorm_forward(Tensor& out, Tensor& rstd, const Tensor& x, const Tensor& weight, double eps, cudaStream_t stream);
void residual_rmsnorm_forward(Tensor& sum, Tensor& out, Tensor& rstd, const Tensor& x, const Tensor& y,
                              const Tensor& weight, double eps, cudaStream_t stream);
void rmsnorm_backward(Tensor& dx, Tensor& dweight, const Tensor& dout, const Tensor& x, const Tensor& weight,
                      const Tensor& rstd, bool accumulate_dx, cudaStream_t stream);

// ---- swiglu.cu ----
void swiglu_forward(Tensor& out, const Tensor& gate_up, cudaStream_t stream);
void swiglu_backward(Tensor& dgate_up, const Tensor& dout, const Tensor& gate_up, cudaStream_t stream);

// ---- cross_entropy.cu ----
void cross_entropy(Tensor& dlogits, const Tensor& logits, const Tensor& targets, std::int64_t classes,
                   double grad_scale, Tensor& loss_sum, cudaStream_t stream);

// ---- attention.cu: flash attention (tensor cores, online softmax, memory linear in seq) ----
bool flash_attention_supports(const AttentionShape& shape);
void attention_forward(Tensor& out, AttentionSaved& saved, const Tensor& qkv, const AttentionShape& shape,
                       cudaStream_t stream);
void attention_backward(Tensor& dqkv, const Tensor& dout, const Tensor& qkv, const AttentionSaved& saved,
                        const AttentionShape& shape, cudaStream_t stream);

// ---- attention_reference.cu: one thread per query, a [B, H, T, T] probability matrix ----
void attention_forward_reference(Tensor& out, AttentionSaved& saved, const Tensor& qkv, const AttentionShape& shape,
                                 cudaStream_t stream);
void attention_backward_reference(Tensor& dqkv, const Tensor& dout, const Tensor& qkv, const AttentionSaved& saved,
                                  const AttentionShape& shape, cudaStream_t stream);

// ---- attention_cached.cu: new positions against a key/value cache (sampling) ----
void attention_forward_cached(Tensor& out, Tensor& k_cache, Tensor& v_cache, const Tensor& qkv,
                              const AttentionShape& shape, std::int64_t offset, cudaStream_t stream);

// ---- optimizer.cu ----
// Backend::adamw_step; `non_finite_record` is the quantizers' device record of a non-finite
// input (~0 when there was none), which the step's decision reads, moves into the status
// (kStepNonFiniteKey) and clears.
void adamw_step(Tensor& params, Tensor& params_bf16, const Tensor& grads, Tensor& m, Tensor& v,
                const std::vector<ParameterSegment>& segments, const AdamWStep& hp, Tensor& status,
                unsigned long long* non_finite_record, cudaStream_t stream);
// Backend::gradient_squares and Backend::adamw_update: adamw_step's two halves (the same
// kernels' arithmetic, so the same bits), for the sharded optimizer.
void gradient_squares(const Tensor& grads, const std::vector<ParameterSegment>& segments, Tensor& status,
                      const unsigned long long* non_finite_record, cudaStream_t stream);
void adamw_update(Tensor& params, Tensor& params_bf16, const Tensor& grads, Tensor& m, Tensor& v,
                  const std::vector<ParameterSegment>& segments, const AdamWStep& hp, Tensor& status,
                  cudaStream_t stream);

}  // namespace quartet::cuda

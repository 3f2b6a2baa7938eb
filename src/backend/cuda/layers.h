// Model operations of the CUDA backend (see Backend in backend.h for their contracts). These are
// straightforward, deterministic kernels (no floating-point atomics: every reduction has a fixed
// order), written for correctness first; the tests compare each with the CPU backend.
#pragma once

#include <cuda_runtime_api.h>

#include "quartet/backend/backend.h"

namespace quartet::cuda {

void embedding_forward(Tensor& out, const Tensor& tokens, const Tensor& table, cudaStream_t stream);
void embedding_backward(Tensor& dtable, const Tensor& tokens, const Tensor& dout, cudaStream_t stream);
void rmsnorm_forward(Tensor& out, Tensor& rstd, const Tensor& x, const Tensor& weight, double eps, cudaStream_t stream);
void rmsnorm_backward(Tensor& dx, Tensor& dweight, const Tensor& dout, const Tensor& x, const Tensor& weight,
                      const Tensor& rstd, cudaStream_t stream);
void attention_forward(Tensor& out, AttentionSaved& saved, const Tensor& qkv, const AttentionShape& shape,
                       cudaStream_t stream);
void attention_backward(Tensor& dqkv, const Tensor& dout, const Tensor& qkv, const AttentionSaved& saved,
                        const AttentionShape& shape, cudaStream_t stream);
void swiglu_forward(Tensor& out, const Tensor& gate_up, cudaStream_t stream);
void swiglu_backward(Tensor& dgate_up, const Tensor& dout, const Tensor& gate_up, cudaStream_t stream);
double cross_entropy(Tensor& dlogits, const Tensor& logits, const Tensor& targets, double grad_scale, cudaStream_t stream);

}  // namespace quartet::cuda

// The reference attention kernels (ops.h): each mirrors the CPU code's loops (one thread per
// query, FP32 rotated q/k/v and a [B, H, T, T] probability matrix) with unfused FP32 operations,
// so they agree with the CPU to an ulp of expf. Quadratic memory and slow; kept as the plain
// version the fused kernels (attention.cu) are checked against, selectable with
// CudaBackendOptions::reference_attention.
#include <cuda_bf16.h>

#include <algorithm>
#include <initializer_list>
#include <cmath>
#include <vector>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device_memory.h"
#include "backend/cuda/message.h"
#include "backend/cuda/device_real.cuh"
#include "backend/cuda/ops.h"
#include "quartet/backend/rope_tables.h"
#include "quartet/error.h"
#include "quartet/numerics/host_device.h"

namespace quartet::cuda {

namespace {

constexpr int kThreads = 256;

unsigned blocks_for(std::int64_t n) { return static_cast<unsigned>(std::max<std::int64_t>(1, (n + kThreads - 1) / kThreads)); }

void expect_on_device(const Tensor& t, const char* what) {
  if (!t.defined() || t.device() != Device::cuda) throw Error(message(what, ": expected a GPU tensor"));
}

void expect_real(const Tensor& t, const char* what) {
  expect_on_device(t, what);
  if (t.dtype() != DType::f32 && t.dtype() != DType::bf16) {
    throw Error(message(what, ": expected an f32 or bf16 tensor, got ", dtype_name(t.dtype())));
  }
}

bool is_bf16(const Tensor& t) { return t.dtype() == DType::bf16; }

// ---- attention ----------------------------------------------------------------------------

struct AttentionState {
  std::shared_ptr<void> q, k, v;  // float: rotated q [B,T,H,D], rotated k and v [B,T,KV,D]
  std::shared_ptr<void> probs;    // float [B,H,T,T]
  std::shared_ptr<void> cos, sin; // float [T, D/2]
};

struct Dims {
  std::int64_t B, T, H, KV, D, width;
};

Dims dims_of(const AttentionShape& s) { return {s.batch, s.seq, s.heads, s.kv_heads, s.head_dim, s.qkv_width()}; }

void check_attention_shape(const AttentionShape& s, const Tensor& qkv) {
  if (s.batch < 1 || s.seq < 1 || s.heads < 1 || s.kv_heads < 1 || s.head_dim < 2 || s.head_dim % 2 != 0 ||
      s.heads % s.kv_heads != 0) {
    throw Error(message("attention: invalid shape (batch ", s.batch, ", seq ", s.seq, ", heads ", s.heads, ", kv heads ", s.kv_heads, ", head dim ", s.head_dim, ")"));
  }
  if (qkv.ndim() != 2 || qkv.dim(0) != s.tokens() || qkv.dim(1) != s.qkv_width()) {
    throw Error(message("attention: qkv has shape ", shape_string(qkv.shape()), ", expected [", s.tokens(), ", ", s.qkv_width(), "]"));
  }
}

// Rotate-half RoPE of one head vector, unfused like the CPU's.
__device__ void rope(float* x, const float* c, const float* s, std::int64_t half, bool inverse) {
  for (std::int64_t i = 0; i < half; ++i) {
    const float a = x[i], b = x[i + half];
    if (!inverse) {
      x[i] = fsub(fmul(a, c[i]), fmul(b, s[i]));
      x[i + half] = fadd(fmul(b, c[i]), fmul(a, s[i]));
    } else {
      x[i] = fadd(fmul(a, c[i]), fmul(b, s[i]));
      x[i + half] = fsub(fmul(b, c[i]), fmul(a, s[i]));
    }
  }
}

// One thread per (token, head slot): split qkv, rotate q and k.
__global__ void split_rope_kernel(const void* qkv, bool bf16, Dims d, const float* cos_t, const float* sin_t, float* q,
                                  float* k, float* v) {
  const std::int64_t slots = d.H + 2 * d.KV;
  const std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (i >= d.B * d.T * slots) return;
  const std::int64_t n = i / slots, h = i % slots, t = n % d.T, half = d.D / 2;
  float* dst = h < d.H ? q + (n * d.H + h) * d.D
                       : (h < d.H + d.KV ? k + (n * d.KV + (h - d.H)) * d.D : v + (n * d.KV + (h - d.H - d.KV)) * d.D);
  for (std::int64_t j = 0; j < d.D; ++j) dst[j] = load_real(qkv, bf16, n * d.width + h * d.D + j);
  if (h < d.H + d.KV) rope(dst, cos_t + t * half, sin_t + t * half, half, false);
}

// One thread per (batch, head, query t): scores, softmax, output, as the CPU loops do.
__global__ void attention_forward_kernel(Dims d, const float* q, const float* k, const float* v, float* probs,
                                         void* out, bool out_bf16, float scale) {
  const std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (i >= d.B * d.H * d.T) return;
  const std::int64_t t = i % d.T, bh = i / d.T, b = bh / d.H, h = bh % d.H, kvh = h / (d.H / d.KV);
  const float* qv = q + ((b * d.T + t) * d.H + h) * d.D;
  float* p = probs + (bh * d.T + t) * d.T;
  float mx = -INFINITY;
  for (std::int64_t u = 0; u <= t; ++u) {
    const float* kv = k + ((b * d.T + u) * d.KV + kvh) * d.D;
    float dot = 0.0f;
    for (std::int64_t j = 0; j < d.D; ++j) dot = fadd(dot, fmul(qv[j], kv[j]));
    p[u] = fmul(dot, scale);
    mx = fmaxf(mx, p[u]);
  }
  float sum = 0.0f;
  for (std::int64_t u = 0; u <= t; ++u) {
    p[u] = expf(fsub(p[u], mx));
    sum = fadd(sum, p[u]);
  }
  for (std::int64_t u = 0; u <= t; ++u) p[u] = fdiv(p[u], sum);
  const std::int64_t o = (b * d.T + t) * d.H * d.D + h * d.D;
  for (std::int64_t j = 0; j < d.D; ++j) {
    float y = 0.0f;
    for (std::int64_t u = 0; u <= t; ++u) y = fadd(y, fmul(p[u], v[((b * d.T + u) * d.KV + kvh) * d.D + j]));
    store_real(out, out_bf16, o + j, y);
  }
}

// Backward, part 1: one thread per (batch, head, query t): dS (into dscore) and dq.
__global__ void attention_backward_query_kernel(Dims d, const float* q, const float* k, const float* v,
                                                const float* probs, const void* dout, bool dout_bf16, float* dscore,
                                                float* dq, float scale) {
  const std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (i >= d.B * d.H * d.T) return;
  const std::int64_t t = i % d.T, bh = i / d.T, b = bh / d.H, h = bh % d.H, kvh = h / (d.H / d.KV);
  const float* p = probs + (bh * d.T + t) * d.T;
  float* ds = dscore + (bh * d.T + t) * d.T;
  const std::int64_t o = (b * d.T + t) * d.H * d.D + h * d.D;
  float dot_pdp = 0.0f;
  for (std::int64_t u = 0; u <= t; ++u) {
    const float* vv = v + ((b * d.T + u) * d.KV + kvh) * d.D;
    float acc = 0.0f;
    for (std::int64_t j = 0; j < d.D; ++j) acc = fadd(acc, fmul(load_real(dout, dout_bf16, o + j), vv[j]));
    ds[u] = acc;  // dp for now
    dot_pdp = fadd(dot_pdp, fmul(p[u], acc));
  }
  for (std::int64_t u = 0; u <= t; ++u) ds[u] = fmul(fmul(p[u], fsub(ds[u], dot_pdp)), scale);
  float* g = dq + ((b * d.T + t) * d.H + h) * d.D;
  for (std::int64_t j = 0; j < d.D; ++j) g[j] = 0.0f;
  for (std::int64_t u = 0; u <= t; ++u) {
    const float* kv = k + ((b * d.T + u) * d.KV + kvh) * d.D;
    for (std::int64_t j = 0; j < d.D; ++j) g[j] = fadd(g[j], fmul(ds[u], kv[j]));
  }
}

// Backward, part 2: one thread per (batch, kv head, key u, dim j): dk and dv summed over the
// group's heads and the queries t >= u, in the CPU's order (head, then t).
__global__ void attention_backward_key_kernel(Dims d, const float* q, const float* probs, const float* dscore,
                                              const void* dout, bool dout_bf16, float* dk, float* dv) {
  const std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (i >= d.B * d.KV * d.T * d.D) return;
  const std::int64_t j = i % d.D, u = (i / d.D) % d.T, bk = i / (d.D * d.T), b = bk / d.KV, kvh = bk % d.KV;
  const std::int64_t group = d.H / d.KV;
  float gk = 0.0f, gv = 0.0f;
  for (std::int64_t h = kvh * group; h < (kvh + 1) * group; ++h) {
    const std::int64_t bh = b * d.H + h;
    for (std::int64_t t = u; t < d.T; ++t) {
      const std::int64_t pt = (bh * d.T + t) * d.T + u;
      gv = fadd(gv, fmul(probs[pt], load_real(dout, dout_bf16, (b * d.T + t) * d.H * d.D + h * d.D + j)));
      gk = fadd(gk, fmul(dscore[pt], q[((b * d.T + t) * d.H + h) * d.D + j]));
    }
  }
  dk[((b * d.T + u) * d.KV + kvh) * d.D + j] = gk;
  dv[((b * d.T + u) * d.KV + kvh) * d.D + j] = gv;
}

// One thread per (token, head slot): un-rotate dq and dk, write dqkv.
__global__ void merge_unrope_kernel(Dims d, const float* dq, const float* dk, const float* dv, const float* cos_t,
                                    const float* sin_t, void* dqkv, bool bf16) {
  const std::int64_t slots = d.H + 2 * d.KV;
  const std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (i >= d.B * d.T * slots) return;
  const std::int64_t n = i / slots, h = i % slots, t = n % d.T, half = d.D / 2;
  float x[256];
  const float* src = h < d.H ? dq + (n * d.H + h) * d.D
                             : (h < d.H + d.KV ? dk + (n * d.KV + (h - d.H)) * d.D : dv + (n * d.KV + (h - d.H - d.KV)) * d.D);
  for (std::int64_t j = 0; j < d.D; ++j) x[j] = src[j];
  if (h < d.H + d.KV) rope(x, cos_t + t * half, sin_t + t * half, half, true);
  for (std::int64_t j = 0; j < d.D; ++j) store_real(dqkv, bf16, n * d.width + h * d.D + j, x[j]);
}

}  // namespace

void attention_forward_reference(Tensor& out, AttentionSaved& saved, const Tensor& qkv, const AttentionShape& s,
                                 cudaStream_t stream) {
  expect_real(qkv, "attention");
  expect_real(out, "attention output");
  check_attention_shape(s, qkv);
  if (s.head_dim > 256) throw Error(message("attention: head dimension ", s.head_dim, " above 256 is not supported on the GPU"));
  out.expect("attention output", {s.tokens(), s.q_width()}, out.dtype());
  const Dims d = dims_of(s);
  auto st = std::make_shared<AttentionState>();
  st->q = device_alloc(static_cast<std::size_t>(d.B * d.T * d.H * d.D) * 4);
  st->k = device_alloc(static_cast<std::size_t>(d.B * d.T * d.KV * d.D) * 4);
  st->v = device_alloc(static_cast<std::size_t>(d.B * d.T * d.KV * d.D) * 4);
  st->probs = device_alloc(static_cast<std::size_t>(d.B * d.H * d.T * d.T) * 4);
  // cos/sin tables exactly as the CPU makes them (rope_tables.h, rounded to FP32).
  std::vector<float> c, sn;
  rope_tables(d.T, d.D, s.rope_theta, c, sn);
  st->cos = device_alloc(c.size() * 4);
  st->sin = device_alloc(sn.size() * 4);
  QUARTET_CUDA_CHECK(cudaMemcpy(st->cos.get(), c.data(), c.size() * 4, cudaMemcpyHostToDevice));
  QUARTET_CUDA_CHECK(cudaMemcpy(st->sin.get(), sn.data(), sn.size() * 4, cudaMemcpyHostToDevice));
  split_rope_kernel<<<blocks_for(d.B * d.T * (d.H + 2 * d.KV)), kThreads, 0, stream>>>(
      qkv.raw(), is_bf16(qkv), d, ptr<float>(st->cos), ptr<float>(st->sin), ptr<float>(st->q), ptr<float>(st->k),
      ptr<float>(st->v));
  QUARTET_CUDA_LAUNCHED();
  const float scale = 1.0f / std::sqrt(static_cast<float>(d.D));
  attention_forward_kernel<<<blocks_for(d.B * d.H * d.T), kThreads, 0, stream>>>(
      d, ptr<float>(st->q), ptr<float>(st->k), ptr<float>(st->v), ptr<float>(st->probs), out.raw(), is_bf16(out), scale);
  QUARTET_CUDA_LAUNCHED();
  saved.impl = st;
}

void attention_backward_reference(Tensor& dqkv, const Tensor& dout, const Tensor& qkv, const AttentionSaved& saved,
                                  const AttentionShape& s, cudaStream_t stream) {
  expect_real(dqkv, "attention backward");
  expect_real(dout, "attention backward");
  check_attention_shape(s, qkv);
  dout.expect("attention backward", {s.tokens(), s.q_width()}, dout.dtype());
  dqkv.expect("attention backward dqkv", qkv.shape(), dqkv.dtype());
  if (!saved.impl) throw Error("attention backward: the forward pass saved nothing");
  const auto& st = *static_cast<const AttentionState*>(saved.impl.get());
  const Dims d = dims_of(s);
  auto dscore = device_alloc(static_cast<std::size_t>(d.B * d.H * d.T * d.T) * 4);
  auto dq = device_alloc(static_cast<std::size_t>(d.B * d.T * d.H * d.D) * 4);
  auto dk = device_alloc(static_cast<std::size_t>(d.B * d.T * d.KV * d.D) * 4);
  auto dv = device_alloc(static_cast<std::size_t>(d.B * d.T * d.KV * d.D) * 4);
  const float scale = 1.0f / std::sqrt(static_cast<float>(d.D));
  attention_backward_query_kernel<<<blocks_for(d.B * d.H * d.T), kThreads, 0, stream>>>(
      d, ptr<float>(st.q), ptr<float>(st.k), ptr<float>(st.v), ptr<float>(st.probs), dout.raw(), is_bf16(dout),
      ptr<float>(dscore), ptr<float>(dq), scale);
  QUARTET_CUDA_LAUNCHED();
  attention_backward_key_kernel<<<blocks_for(d.B * d.KV * d.T * d.D), kThreads, 0, stream>>>(
      d, ptr<float>(st.q), ptr<float>(st.probs), ptr<float>(dscore), dout.raw(), is_bf16(dout), ptr<float>(dk), ptr<float>(dv));
  QUARTET_CUDA_LAUNCHED();
  merge_unrope_kernel<<<blocks_for(d.B * d.T * (d.H + 2 * d.KV)), kThreads, 0, stream>>>(
      d, ptr<float>(dq), ptr<float>(dk), ptr<float>(dv), ptr<float>(st.cos), ptr<float>(st.sin), dqkv.raw(), is_bf16(dqkv));
  QUARTET_CUDA_LAUNCHED();
}

}  // namespace quartet::cuda

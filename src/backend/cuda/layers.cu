// Model operations on the GPU (layers.h). Each kernel mirrors the CPU code's loops and uses
// unfused FP32 operations (fmul/fadd), so where the CPU's order is sequential the results agree
// bit for bit; exp/log come from CUDA's libdevice and may differ from glibc's in the last ulp.
#include <cuda_bf16.h>

#include <algorithm>
#include <initializer_list>
#include <cmath>
#include <map>
#include <vector>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device_memory.h"
#include "backend/cuda/message.h"
#include "backend/cuda/device_real.cuh"
#include "backend/cuda/layers.h"
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

// ---- embedding ----------------------------------------------------------------------------

__global__ void check_tokens_kernel(const std::int32_t* tokens, std::int64_t n, std::int64_t vocab,
                                    unsigned long long* first_bad) {
  const std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (i < n && (tokens[i] < 0 || tokens[i] >= vocab)) atomicMin(first_bad, static_cast<unsigned long long>(i));
}

void check_tokens(const char* what, const Tensor& tokens, std::int64_t n, std::int64_t vocab, cudaStream_t stream) {
  tokens.expect(what, {n}, DType::i32);
  expect_on_device(tokens, what);
  auto bad = device_alloc(8);
  QUARTET_CUDA_CHECK(cudaMemsetAsync(bad.get(), 0xFF, 8, stream));
  check_tokens_kernel<<<blocks_for(n), kThreads, 0, stream>>>(static_cast<const std::int32_t*>(tokens.raw()), n, vocab,
                                                              ptr<unsigned long long>(bad));
  QUARTET_CUDA_LAUNCHED();
  unsigned long long first = 0;
  QUARTET_CUDA_CHECK(cudaMemcpyAsync(&first, bad.get(), 8, cudaMemcpyDeviceToHost, stream));
  QUARTET_CUDA_CHECK(cudaStreamSynchronize(stream));
  if (first != ~0ull) {
    std::int32_t token = 0;
    QUARTET_CUDA_CHECK(cudaMemcpy(&token, static_cast<const std::int32_t*>(tokens.raw()) + first, 4, cudaMemcpyDeviceToHost));
    throw Error(message(what, ": token ", token, " at position ", first, " is outside the vocabulary of ", vocab));
  }
}

__global__ void embedding_forward_kernel(const std::int32_t* tokens, const void* table, bool table_bf16, void* out,
                                         bool out_bf16, std::int64_t n, std::int64_t c) {
  const std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n * c) return;
  store_real(out, out_bf16, i, load_real(table, table_bf16, tokens[i / c] * c + i % c));
}

// One thread per (distinct token, column): the token's positions are added in order, like the
// CPU's sequential loop, so the result is identical and deterministic.
__global__ void embedding_backward_kernel(const std::int32_t* distinct, const std::int32_t* offsets,
                                          const std::int32_t* positions, std::int64_t n_distinct, const void* dout,
                                          bool dout_bf16, float* dtable, std::int64_t c) {
  const std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n_distinct * c) return;
  const std::int64_t u = i / c, j = i % c;
  float* g = dtable + static_cast<std::int64_t>(distinct[u]) * c + j;
  float acc = *g;
  for (std::int32_t k = offsets[u]; k < offsets[u + 1]; ++k) acc = fadd(acc, load_real(dout, dout_bf16, positions[k] * c + j));
  *g = acc;
}

// ---- RMSNorm ------------------------------------------------------------------------------

// One thread per row, the CPU's sequential sums.
__global__ void rmsnorm_forward_kernel(const void* x, bool x_bf16, const void* w, bool w_bf16, void* out,
                                       bool out_bf16, float* rstd, std::int64_t n, std::int64_t c, float eps) {
  const std::int64_t r = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (r >= n) return;
  float ss = 0.0f;
  for (std::int64_t j = 0; j < c; ++j) {
    const float v = load_real(x, x_bf16, r * c + j);
    ss = fadd(ss, fmul(v, v));
  }
  const float s = fdiv(1.0f, fsqrt(fadd(fdiv(ss, static_cast<float>(c)), eps)));
  rstd[r] = s;
  for (std::int64_t j = 0; j < c; ++j) {
    store_real(out, out_bf16, r * c + j, fmul(fmul(load_real(x, x_bf16, r * c + j), s), load_real(w, w_bf16, j)));
  }
}

__global__ void rmsnorm_backward_rows_kernel(const void* dy, bool dy_bf16, const void* x, bool x_bf16, const void* w,
                                             bool w_bf16, const float* rstd, void* dx, bool dx_bf16, float* dw_rows,
                                             std::int64_t n, std::int64_t c) {
  const std::int64_t r = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (r >= n) return;
  float dot = 0.0f;
  for (std::int64_t j = 0; j < c; ++j) {
    dot = fadd(dot, fmul(fmul(load_real(dy, dy_bf16, r * c + j), load_real(w, w_bf16, j)), load_real(x, x_bf16, r * c + j)));
  }
  const float s = rstd[r];
  const float coef = fdiv(fmul(fmul(fmul(s, s), s), dot), static_cast<float>(c));
  for (std::int64_t j = 0; j < c; ++j) {
    const float d = load_real(dy, dy_bf16, r * c + j), xv = load_real(x, x_bf16, r * c + j);
    store_real(dx, dx_bf16, r * c + j, fsub(fmul(fmul(s, d), load_real(w, w_bf16, j)), fmul(xv, coef)));
    dw_rows[r * c + j] = fmul(fmul(d, xv), s);
  }
}

// dweight[j] += sum over rows in row order (the CPU's order).
__global__ void column_accumulate_kernel(const float* rows, std::int64_t n, std::int64_t c, float* out) {
  const std::int64_t j = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (j >= c) return;
  float acc = out[j];
  for (std::int64_t r = 0; r < n; ++r) acc = fadd(acc, rows[r * c + j]);
  out[j] = acc;
}

// ---- SwiGLU -------------------------------------------------------------------------------

__global__ void swiglu_forward_kernel(const void* gu, bool gu_bf16, void* out, bool out_bf16, std::int64_t n,
                                      std::int64_t f) {
  const std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n * f) return;
  const std::int64_t r = i / f, j = i % f;
  const float g = load_real(gu, gu_bf16, r * 2 * f + j), u = load_real(gu, gu_bf16, r * 2 * f + f + j);
  store_real(out, out_bf16, i, fmul(fdiv(g, fadd(1.0f, expf(-g))), u));
}

__global__ void swiglu_backward_kernel(const void* gu, bool gu_bf16, const void* dout, bool dout_bf16, void* dgu,
                                       bool dgu_bf16, std::int64_t n, std::int64_t f) {
  const std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n * f) return;
  const std::int64_t r = i / f, j = i % f;
  const float g = load_real(gu, gu_bf16, r * 2 * f + j), u = load_real(gu, gu_bf16, r * 2 * f + f + j);
  const float d = load_real(dout, dout_bf16, i);
  const float sig = fdiv(1.0f, fadd(1.0f, expf(-g)));
  const float silu = fmul(g, sig);
  store_real(dgu, dgu_bf16, r * 2 * f + j, fmul(fmul(fmul(d, u), sig), fadd(1.0f, fmul(g, fsub(1.0f, sig)))));
  store_real(dgu, dgu_bf16, r * 2 * f + f + j, fmul(d, silu));
}

// ---- cross-entropy ------------------------------------------------------------------------

// One thread per row, in double like the CPU. dlogits may alias logits: each element is read
// before it is written, by the same thread.
__global__ void cross_entropy_kernel(const float* logits, const std::int32_t* targets, float* dlogits, double* row_loss,
                                     std::int64_t n, std::int64_t v, double scale) {
  const std::int64_t r = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (r >= n) return;
  const float* row = logits + r * v;
  float* drow = dlogits + r * v;
  const std::int32_t t = targets[r];
  if (t < 0) {
    for (std::int64_t j = 0; j < v; ++j) drow[j] = 0.0f;
    row_loss[r] = 0.0;
    return;
  }
  float mx = row[0];
  for (std::int64_t j = 1; j < v; ++j) mx = fmaxf(mx, row[j]);
  double sum = 0;
  for (std::int64_t j = 0; j < v; ++j) sum += exp(static_cast<double>(row[j] - mx));
  const double log_z = log(sum) + static_cast<double>(mx);
  row_loss[r] = log_z - static_cast<double>(row[t]);
  for (std::int64_t j = 0; j < v; ++j) {
    const double p = exp(static_cast<double>(row[j]) - log_z);
    drow[j] = static_cast<float>((p - (j == t ? 1.0 : 0.0)) * scale);
  }
}

__global__ void check_targets_kernel(const std::int32_t* targets, std::int64_t n, std::int64_t vocab,
                                     unsigned long long* first_bad) {
  const std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (i < n && targets[i] >= vocab) atomicMin(first_bad, static_cast<unsigned long long>(i));
}

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

void embedding_forward(Tensor& out, const Tensor& tokens, const Tensor& table, cudaStream_t stream) {
  expect_real(table, "embedding table");
  expect_real(out, "embedding output");
  const std::int64_t n = out.dim(0), c = table.dim(1);
  out.expect("embedding output", {n, c}, out.dtype());
  check_tokens("embedding", tokens, n, table.dim(0), stream);
  embedding_forward_kernel<<<blocks_for(n * c), kThreads, 0, stream>>>(static_cast<const std::int32_t*>(tokens.raw()),
                                                                       table.raw(), is_bf16(table), out.raw(),
                                                                       is_bf16(out), n, c);
  QUARTET_CUDA_LAUNCHED();
}

void embedding_backward(Tensor& dtable, const Tensor& tokens, const Tensor& dout, cudaStream_t stream) {
  expect_real(dout, "embedding gradient");
  expect_on_device(dtable, "embedding table gradient");
  if (dtable.dtype() != DType::f32) throw Error("embedding backward: the table gradient must be f32");
  const std::int64_t n = dout.dim(0), c = dtable.dim(1);
  dout.expect("embedding gradient", {n, c}, dout.dtype());
  check_tokens("embedding backward", tokens, n, dtable.dim(0), stream);
  // Group positions by token on the host (a few thousand ints): deterministic sums, no atomics.
  std::vector<std::int32_t> ids(static_cast<std::size_t>(n));
  QUARTET_CUDA_CHECK(cudaMemcpy(ids.data(), tokens.raw(), ids.size() * 4, cudaMemcpyDeviceToHost));
  std::map<std::int32_t, std::vector<std::int32_t>> by_token;
  for (std::int64_t i = 0; i < n; ++i) by_token[ids[static_cast<std::size_t>(i)]].push_back(static_cast<std::int32_t>(i));
  std::vector<std::int32_t> distinct, offsets = {0}, positions;
  for (const auto& [token, where] : by_token) {
    distinct.push_back(token);
    positions.insert(positions.end(), where.begin(), where.end());
    offsets.push_back(static_cast<std::int32_t>(positions.size()));
  }
  auto d_distinct = device_alloc(distinct.size() * 4), d_offsets = device_alloc(offsets.size() * 4),
       d_positions = device_alloc(positions.size() * 4);
  QUARTET_CUDA_CHECK(cudaMemcpy(d_distinct.get(), distinct.data(), distinct.size() * 4, cudaMemcpyHostToDevice));
  QUARTET_CUDA_CHECK(cudaMemcpy(d_offsets.get(), offsets.data(), offsets.size() * 4, cudaMemcpyHostToDevice));
  QUARTET_CUDA_CHECK(cudaMemcpy(d_positions.get(), positions.data(), positions.size() * 4, cudaMemcpyHostToDevice));
  const auto nd = static_cast<std::int64_t>(distinct.size());
  embedding_backward_kernel<<<blocks_for(nd * c), kThreads, 0, stream>>>(
      ptr<std::int32_t>(d_distinct), ptr<std::int32_t>(d_offsets), ptr<std::int32_t>(d_positions), nd, dout.raw(),
      is_bf16(dout), static_cast<float*>(dtable.raw()), c);
  QUARTET_CUDA_LAUNCHED();
}

void rmsnorm_forward(Tensor& out, Tensor& rstd, const Tensor& x, const Tensor& weight, double eps, cudaStream_t stream) {
  for (const Tensor* t : std::initializer_list<const Tensor*>{&out, &x, &weight}) expect_real(*t, "rmsnorm");
  if (x.ndim() != 2 || out.shape() != x.shape()) throw Error("rmsnorm: x and out must be the same 2-D shape");
  const std::int64_t n = x.dim(0), c = x.dim(1);
  weight.expect("rmsnorm weight", {c}, weight.dtype());
  rstd.expect("rmsnorm rstd", {n}, DType::f32);
  rmsnorm_forward_kernel<<<blocks_for(n), kThreads, 0, stream>>>(x.raw(), is_bf16(x), weight.raw(), is_bf16(weight),
                                                                 out.raw(), is_bf16(out), static_cast<float*>(rstd.raw()), n,
                                                                 c, static_cast<float>(eps));
  QUARTET_CUDA_LAUNCHED();
}

void rmsnorm_backward(Tensor& dx, Tensor& dweight, const Tensor& dout, const Tensor& x, const Tensor& weight,
                      const Tensor& rstd, cudaStream_t stream) {
  for (const Tensor* t : std::initializer_list<const Tensor*>{&dx, &dout, &x, &weight}) expect_real(*t, "rmsnorm backward");
  const std::int64_t n = x.dim(0), c = x.dim(1);
  if (dout.shape() != x.shape() || dx.shape() != x.shape()) throw Error("rmsnorm backward: dx, dout and x must match");
  dweight.expect("rmsnorm backward dweight", {c}, DType::f32);
  auto rows = device_alloc(static_cast<std::size_t>(n * c) * sizeof(float));
  rmsnorm_backward_rows_kernel<<<blocks_for(n), kThreads, 0, stream>>>(
      dout.raw(), is_bf16(dout), x.raw(), is_bf16(x), weight.raw(), is_bf16(weight),
      static_cast<const float*>(rstd.raw()), dx.raw(), is_bf16(dx), ptr<float>(rows), n, c);
  QUARTET_CUDA_LAUNCHED();
  column_accumulate_kernel<<<blocks_for(c), kThreads, 0, stream>>>(ptr<float>(rows), n, c, static_cast<float*>(dweight.raw()));
  QUARTET_CUDA_LAUNCHED();
}

void swiglu_forward(Tensor& out, const Tensor& gate_up, cudaStream_t stream) {
  expect_real(out, "swiglu");
  expect_real(gate_up, "swiglu");
  const std::int64_t n = gate_up.dim(0), f = gate_up.dim(1) / 2;
  if (gate_up.dim(1) != 2 * f) throw Error("swiglu: the gate|up input needs an even width");
  out.expect("swiglu output", {n, f}, out.dtype());
  swiglu_forward_kernel<<<blocks_for(n * f), kThreads, 0, stream>>>(gate_up.raw(), is_bf16(gate_up), out.raw(),
                                                                    is_bf16(out), n, f);
  QUARTET_CUDA_LAUNCHED();
}

void swiglu_backward(Tensor& dgate_up, const Tensor& dout, const Tensor& gate_up, cudaStream_t stream) {
  for (const Tensor* t : std::initializer_list<const Tensor*>{&dgate_up, &dout, &gate_up}) expect_real(*t, "swiglu backward");
  const std::int64_t n = gate_up.dim(0), f = gate_up.dim(1) / 2;
  dout.expect("swiglu backward", {n, f}, dout.dtype());
  if (dgate_up.shape() != gate_up.shape()) throw Error("swiglu backward: dgate_up must match gate_up");
  swiglu_backward_kernel<<<blocks_for(n * f), kThreads, 0, stream>>>(gate_up.raw(), is_bf16(gate_up), dout.raw(),
                                                                     is_bf16(dout), dgate_up.raw(), is_bf16(dgate_up), n, f);
  QUARTET_CUDA_LAUNCHED();
}

double cross_entropy(Tensor& dlogits, const Tensor& logits, const Tensor& targets, double grad_scale, cudaStream_t stream) {
  expect_on_device(logits, "cross_entropy");
  if (logits.dtype() != DType::f32 || dlogits.dtype() != DType::f32 || logits.ndim() != 2 || dlogits.shape() != logits.shape()) {
    throw Error("cross_entropy: logits and dlogits must be f32 [rows, vocab] tensors of one shape");
  }
  const std::int64_t n = logits.dim(0), v = logits.dim(1);
  targets.expect("cross_entropy targets", {n}, DType::i32);
  auto bad = device_alloc(8);
  QUARTET_CUDA_CHECK(cudaMemsetAsync(bad.get(), 0xFF, 8, stream));
  check_targets_kernel<<<blocks_for(n), kThreads, 0, stream>>>(static_cast<const std::int32_t*>(targets.raw()), n, v,
                                                               ptr<unsigned long long>(bad));
  QUARTET_CUDA_LAUNCHED();
  unsigned long long first = 0;
  QUARTET_CUDA_CHECK(cudaMemcpyAsync(&first, bad.get(), 8, cudaMemcpyDeviceToHost, stream));
  QUARTET_CUDA_CHECK(cudaStreamSynchronize(stream));
  if (first != ~0ull) throw Error(message("cross_entropy: the target at row ", first, " is outside the vocabulary of ", v));
  auto losses = device_alloc(static_cast<std::size_t>(n) * sizeof(double));
  cross_entropy_kernel<<<blocks_for(n), kThreads, 0, stream>>>(static_cast<const float*>(logits.raw()),
                                                               static_cast<const std::int32_t*>(targets.raw()),
                                                               static_cast<float*>(dlogits.raw()), ptr<double>(losses), n, v,
                                                               grad_scale);
  QUARTET_CUDA_LAUNCHED();
  std::vector<double> host(static_cast<std::size_t>(n));
  QUARTET_CUDA_CHECK(cudaMemcpyAsync(host.data(), losses.get(), host.size() * sizeof(double), cudaMemcpyDeviceToHost, stream));
  QUARTET_CUDA_CHECK(cudaStreamSynchronize(stream));
  double total = 0;
  for (double x : host) total += x;  // row order, like the CPU
  return total;
}

void attention_forward(Tensor& out, AttentionSaved& saved, const Tensor& qkv, const AttentionShape& s, cudaStream_t stream) {
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
  // cos/sin tables exactly as the CPU makes them (double, rounded to FP32).
  const std::int64_t half = d.D / 2;
  std::vector<float> c(static_cast<std::size_t>(d.T * half)), sn(c.size());
  for (std::int64_t t = 0; t < d.T; ++t) {
    for (std::int64_t i = 0; i < half; ++i) {
      const double angle = static_cast<double>(t) * std::pow(s.rope_theta, -2.0 * static_cast<double>(i) / static_cast<double>(d.D));
      c[static_cast<std::size_t>(t * half + i)] = static_cast<float>(std::cos(angle));
      sn[static_cast<std::size_t>(t * half + i)] = static_cast<float>(std::sin(angle));
    }
  }
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

void attention_backward(Tensor& dqkv, const Tensor& dout, const Tensor& qkv, const AttentionSaved& saved,
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

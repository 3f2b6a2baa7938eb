// Causal self-attention with rotary position embeddings (rotate-half convention, as in
// Hugging Face Llama) and grouped-query heads, on the CPU. The forward pass keeps the rotated
// q and k and the softmax probabilities for the backward pass.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "backend/cpu/ops.h"
#include "numerics/parallel.h"
#include "quartet/backend/rope_tables.h"
#include "quartet/error.h"

namespace quartet::cpu {

namespace {

template <class Real>
struct Saved {
  std::vector<Real> q, k;  // rotated, [batch, seq, heads or kv_heads, head_dim]
  std::vector<Real> v;     // [batch, seq, kv_heads, head_dim]
  std::vector<Real> probs;  // [batch, heads, seq, seq], zero above the diagonal
};

void check_shape(const AttentionShape& s, const Tensor& qkv) {
  if (s.batch < 1 || s.seq < 1 || s.heads < 1 || s.kv_heads < 1 || s.head_dim < 2 || s.head_dim % 2 != 0 ||
      s.heads % s.kv_heads != 0) {
    throw Error(fmt::format("attention: invalid shape (batch {}, seq {}, heads {}, kv heads {}, head dim {}): heads must "
                            "be a multiple of kv heads and the head dim even",
                            s.batch, s.seq, s.heads, s.kv_heads, s.head_dim));
  }
  if (qkv.ndim() != 2 || qkv.dim(0) != s.tokens() || qkv.dim(1) != s.qkv_width()) {
    throw Error(fmt::format("attention: qkv has shape {}, expected [{}, {}]", shape_string(qkv.shape()), s.tokens(),
                            s.qkv_width()));
  }
}


// Rotates one head vector in place; `inverse` applies the transpose (for gradients).
template <class Real>
void rope_rotate(Real* x, const Real* c, const Real* s, std::int64_t half, bool inverse) {
  for (std::int64_t i = 0; i < half; ++i) {
    const Real a = x[i], b = x[i + half];
    if (!inverse) {
      x[i] = a * c[i] - b * s[i];
      x[i + half] = b * c[i] + a * s[i];
    } else {
      x[i] = a * c[i] + b * s[i];
      x[i + half] = b * c[i] - a * s[i];
    }
  }
}

}  // namespace

template <class Real>
void attention_forward(Tensor& out, AttentionSaved& saved_handle, const Tensor& qkv, const AttentionShape& s) {
  check_shape(s, qkv);
  out.expect("attention output", {s.tokens(), s.q_width()}, out.dtype());
  const std::int64_t B = s.batch, T = s.seq, H = s.heads, KV = s.kv_heads, D = s.head_dim, half = D / 2;
  const std::int64_t width = s.qkv_width(), group = H / KV;
  const In<Real> in(qkv);
  auto saved = std::make_shared<Saved<Real>>();
  saved->q.resize(static_cast<std::size_t>(B * T * H * D));
  saved->k.resize(static_cast<std::size_t>(B * T * KV * D));
  saved->v.resize(saved->k.size());
  saved->probs.assign(static_cast<std::size_t>(B * H * T * T), Real(0));
  std::vector<Real> cos_t, sin_t;
  rope_tables(s.seq, s.head_dim, s.rope_theta, cos_t, sin_t);

  for (std::int64_t n = 0; n < B * T; ++n) {
    const std::int64_t t = n % T;
    const Real* row = in.data() + n * width;
    for (std::int64_t h = 0; h < H; ++h) {
      Real* q = saved->q.data() + (n * H + h) * D;
      std::copy_n(row + h * D, D, q);
      rope_rotate(q, cos_t.data() + t * half, sin_t.data() + t * half, half, false);
    }
    for (std::int64_t h = 0; h < KV; ++h) {
      Real* k = saved->k.data() + (n * KV + h) * D;
      std::copy_n(row + (H + h) * D, D, k);
      rope_rotate(k, cos_t.data() + t * half, sin_t.data() + t * half, half, false);
      std::copy_n(row + (H + KV + h) * D, D, saved->v.data() + (n * KV + h) * D);
    }
  }

  Out<Real> o(out, false);
  const Real scale = Real(1) / std::sqrt(static_cast<Real>(D));
#pragma omp parallel for schedule(static) if (worth_parallel(B * H * T * T))
  for (std::int64_t bh = 0; bh < B * H; ++bh) {
    const std::int64_t b = bh / H, h = bh % H, kvh = h / group;
    Real* probs = saved->probs.data() + bh * T * T;
    for (std::int64_t t = 0; t < T; ++t) {
      const Real* q = saved->q.data() + ((b * T + t) * H + h) * D;
      Real* p = probs + t * T;
      Real mx = -INFINITY;
      for (std::int64_t u = 0; u <= t; ++u) {
        const Real* k = saved->k.data() + ((b * T + u) * KV + kvh) * D;
        Real dot = 0;
        for (std::int64_t i = 0; i < D; ++i) dot += q[i] * k[i];
        p[u] = dot * scale;
        mx = std::max(mx, p[u]);
      }
      Real sum = 0;
      for (std::int64_t u = 0; u <= t; ++u) {
        p[u] = std::exp(p[u] - mx);
        sum += p[u];
      }
      Real* y = o.data() + (b * T + t) * H * D + h * D;
      for (std::int64_t i = 0; i < D; ++i) y[i] = 0;
      for (std::int64_t u = 0; u <= t; ++u) {
        p[u] /= sum;
        const Real* v = saved->v.data() + ((b * T + u) * KV + kvh) * D;
        for (std::int64_t i = 0; i < D; ++i) y[i] += p[u] * v[i];
      }
    }
  }
  o.commit();
  saved_handle.impl = saved;
}

template <class Real>
void attention_backward(Tensor& dqkv, const Tensor& dout, const Tensor& qkv, const AttentionSaved& saved_handle,
                        const AttentionShape& s) {
  check_shape(s, qkv);
  dout.expect("attention backward", {s.tokens(), s.q_width()}, dout.dtype());
  dqkv.expect("attention backward dqkv", qkv.shape(), dqkv.dtype());
  if (!saved_handle.impl) throw Error("attention backward: the forward pass saved nothing");
  const auto& saved = *static_cast<const Saved<Real>*>(saved_handle.impl.get());
  const std::int64_t B = s.batch, T = s.seq, H = s.heads, KV = s.kv_heads, D = s.head_dim, half = D / 2;
  const std::int64_t width = s.qkv_width(), group = H / KV;
  const Real scale = Real(1) / std::sqrt(static_cast<Real>(D));
  const In<Real> d_out(dout);
  std::vector<Real> dq(saved.q.size(), Real(0)), dk(saved.k.size(), Real(0)), dv(saved.v.size(), Real(0));

  // One task per (batch, kv head): the query heads sharing a kv head accumulate into the same
  // dk, dv rows in a fixed order.
#pragma omp parallel for schedule(static) if (worth_parallel(B * H * T * T))
  for (std::int64_t bk = 0; bk < B * KV; ++bk) {
    const std::int64_t b = bk / KV, kvh = bk % KV;
    std::vector<Real> dp(static_cast<std::size_t>(T));
    for (std::int64_t h = kvh * group; h < (kvh + 1) * group; ++h) {
      const Real* probs = saved.probs.data() + (b * H + h) * T * T;
      for (std::int64_t t = 0; t < T; ++t) {
        const Real* p = probs + t * T;
        const Real* g = d_out.data() + (b * T + t) * H * D + h * D;
        Real dot_pdp = 0;
        for (std::int64_t u = 0; u <= t; ++u) {
          const Real* v = saved.v.data() + ((b * T + u) * KV + kvh) * D;
          Real* gv = dv.data() + ((b * T + u) * KV + kvh) * D;
          Real acc = 0;
          for (std::int64_t i = 0; i < D; ++i) {
            gv[i] += p[u] * g[i];
            acc += g[i] * v[i];
          }
          dp[static_cast<std::size_t>(u)] = acc;
          dot_pdp += p[u] * acc;
        }
        const Real* q = saved.q.data() + ((b * T + t) * H + h) * D;
        Real* gq = dq.data() + ((b * T + t) * H + h) * D;
        for (std::int64_t u = 0; u <= t; ++u) {
          const Real ds = p[u] * (dp[static_cast<std::size_t>(u)] - dot_pdp) * scale;
          const Real* k = saved.k.data() + ((b * T + u) * KV + kvh) * D;
          Real* gk = dk.data() + ((b * T + u) * KV + kvh) * D;
          for (std::int64_t i = 0; i < D; ++i) {
            gq[i] += ds * k[i];
            gk[i] += ds * q[i];
          }
        }
      }
    }
  }

  std::vector<Real> cos_t, sin_t;
  rope_tables(s.seq, s.head_dim, s.rope_theta, cos_t, sin_t);
  Out<Real> o(dqkv, false);
  for (std::int64_t n = 0; n < B * T; ++n) {
    const std::int64_t t = n % T;
    Real* row = o.data() + n * width;
    for (std::int64_t h = 0; h < H; ++h) {
      std::copy_n(dq.data() + (n * H + h) * D, D, row + h * D);
      rope_rotate(row + h * D, cos_t.data() + t * half, sin_t.data() + t * half, half, true);
    }
    for (std::int64_t h = 0; h < KV; ++h) {
      std::copy_n(dk.data() + (n * KV + h) * D, D, row + (H + h) * D);
      rope_rotate(row + (H + h) * D, cos_t.data() + t * half, sin_t.data() + t * half, half, true);
      std::copy_n(dv.data() + (n * KV + h) * D, D, row + (H + KV + h) * D);
    }
  }
  o.commit();
}

template void attention_forward<float>(Tensor&, AttentionSaved&, const Tensor&, const AttentionShape&);
template void attention_forward<double>(Tensor&, AttentionSaved&, const Tensor&, const AttentionShape&);
template void attention_backward<float>(Tensor&, const Tensor&, const Tensor&, const AttentionSaved&,
                                        const AttentionShape&);
template void attention_backward<double>(Tensor&, const Tensor&, const Tensor&, const AttentionSaved&,
                                         const AttentionShape&);

}  // namespace quartet::cpu

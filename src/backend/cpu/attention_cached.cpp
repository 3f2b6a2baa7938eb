// Attention of a few new positions against a key/value cache, on the CPU (sampling: one new
// token costs one token's work). The arithmetic is attention_forward's (attention.cpp) for the
// same query row, operation for operation and in the same order: the rotated keys are kept in
// Real as it keeps them, so a cached pass gives the uncached pass's bits.
#include <algorithm>
#include <cmath>

#include "backend/cpu/ops.h"
#include "numerics/parallel.h"
#include "quartet/backend/rope_tables.h"

namespace quartet::cpu {

namespace {

// attention.cpp's forward rotation (rotate-half), the same expression.
template <class Real>
void rope_rotate(Real* x, const Real* c, const Real* s, std::int64_t half) {
  for (std::int64_t i = 0; i < half; ++i) {
    const Real a = x[i], b = x[i + half];
    x[i] = a * c[i] - b * s[i];
    x[i + half] = b * c[i] + a * s[i];
  }
}

}  // namespace

template <class Real>
void attention_forward_cached(Tensor& out, Tensor& k_cache, Tensor& v_cache, const Tensor& qkv, const AttentionShape& s,
                              std::int64_t offset) {
  check_cached_attention(out, k_cache, v_cache, qkv, s, offset, dtype_of<Real>());
  const std::int64_t B = s.batch, T = s.seq, H = s.heads, KV = s.kv_heads, D = s.head_dim, half = D / 2;
  const std::int64_t width = s.qkv_width(), group = H / KV, capacity = k_cache.dim(0) / B, kv_width = KV * D;
  const In<Real> in(qkv);
  Real* keys = k_cache.data<Real>();
  Real* values = v_cache.data<Real>();
  std::vector<Real> q(static_cast<std::size_t>(B * T * H * D));
  std::vector<Real> cos_t, sin_t;
  rope_table_rows(offset, T, D, s.rope_theta, cos_t, sin_t);

  for (std::int64_t n = 0; n < B * T; ++n) {
    const std::int64_t b = n / T, t = n % T;
    const Real* row = in.data() + n * width;
    const Real *c = cos_t.data() + t * half, *sn = sin_t.data() + t * half;
    for (std::int64_t h = 0; h < H; ++h) {
      Real* qh = q.data() + (n * H + h) * D;
      std::copy_n(row + h * D, D, qh);
      rope_rotate(qh, c, sn, half);
    }
    Real* k_row = keys + (b * capacity + offset + t) * kv_width;
    std::copy_n(row + H * D, kv_width, k_row);
    for (std::int64_t h = 0; h < KV; ++h) rope_rotate(k_row + h * D, c, sn, half);
    std::copy_n(row + (H + KV) * D, kv_width, values + (b * capacity + offset + t) * kv_width);
  }

  Out<Real> o(out, false);
  const Real scale = Real(1) / std::sqrt(static_cast<Real>(D));
  const std::int64_t longest = offset + T;
#pragma omp parallel for schedule(static) if (worth_parallel(B * H * T * longest))
  for (std::int64_t bh = 0; bh < B * H; ++bh) {
    const std::int64_t b = bh / H, h = bh % H, kvh = h / group;
    std::vector<Real> p(static_cast<std::size_t>(longest));
    for (std::int64_t t = 0; t < T; ++t) {
      const std::int64_t pos = offset + t;
      const Real* qh = q.data() + ((b * T + t) * H + h) * D;
      Real mx = -INFINITY;
      for (std::int64_t u = 0; u <= pos; ++u) {
        const Real* k = keys + (b * capacity + u) * kv_width + kvh * D;
        Real dot = 0;
        for (std::int64_t i = 0; i < D; ++i) dot += qh[i] * k[i];
        p[static_cast<std::size_t>(u)] = dot * scale;
        mx = std::max(mx, p[static_cast<std::size_t>(u)]);
      }
      Real sum = 0;
      for (std::int64_t u = 0; u <= pos; ++u) {
        p[static_cast<std::size_t>(u)] = std::exp(p[static_cast<std::size_t>(u)] - mx);
        sum += p[static_cast<std::size_t>(u)];
      }
      Real* y = o.data() + (b * T + t) * H * D + h * D;
      for (std::int64_t i = 0; i < D; ++i) y[i] = 0;
      for (std::int64_t u = 0; u <= pos; ++u) {
        p[static_cast<std::size_t>(u)] /= sum;
        const Real* v = values + (b * capacity + u) * kv_width + kvh * D;
        for (std::int64_t i = 0; i < D; ++i) y[i] += p[static_cast<std::size_t>(u)] * v[i];
      }
    }
  }
  o.commit();
}

template void attention_forward_cached<float>(Tensor&, Tensor&, Tensor&, const Tensor&, const AttentionShape&,
                                              std::int64_t);
template void attention_forward_cached<double>(Tensor&, Tensor&, Tensor&, const Tensor&, const AttentionShape&,
                                               std::int64_t);

}  // namespace quartet::cpu

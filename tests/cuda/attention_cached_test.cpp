// The GPU's attention against a key/value cache (src/backend/cuda/attention_cached.cu) and
// the model's cached forward pass on the GPU (run on the GPU machine; every test skips without
// a GPU).
//
// Tolerance. The kernel rotates q and k in unfused FP32 in the CPU's order and rounds both to
// BF16 (the cache's type); the values are BF16 already. So the cached keys and values are
// compared bit for bit with that computation done here on the host, and the output with
// attention in FP64 of those BF16 q and k: what remains is FP32 accumulation and expf (relative
// errors near 2^-20, allowed as 2^-14 of the largest output) and the output's one rounding to
// BF16 (one BF16 ulp of the value, since the FP32 result may lie just across a rounding
// boundary from the exact one).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "quartet/backend/backend.h"
#include "quartet/backend/cuda.h"
#include "quartet/backend/rope_tables.h"
#include "quartet/nn/llama.h"
#include "quartet/numerics/bf16.h"

namespace quartet {
namespace {

std::vector<double> random_bf16_values(std::int64_t n, std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<double> v(static_cast<std::size_t>(n));
  for (double& x : v) x = round_to_bf16(static_cast<float>(normal(gen)));
  return v;
}

double bf16_ulp(double x) {
  int e = 0;
  std::frexp(std::fabs(x), &e);
  return std::ldexp(1.0, std::max(e - 1, -126) - 7);
}

float bf16(float x) { return round_to_bf16(x); }

struct Case {
  std::int64_t batch, heads, kv_heads, head_dim;
  std::vector<std::int64_t> chunks;  // new positions per call: a prefill, then more
};

class CachedAttentionGpu : public ::testing::TestWithParam<Case> {};

TEST_P(CachedAttentionGpu, MatchesBf16QkReferenceAndCachesBitForBit) {
  if (!cuda_available()) GTEST_SKIP() << cuda_device_description();
  auto gpu = make_cuda_backend();
  const Case c = GetParam();
  std::int64_t seq = 0;
  for (std::int64_t n : c.chunks) seq += n;
  const AttentionShape whole{c.batch, seq, c.heads, c.kv_heads, c.head_dim, 10000.0};
  const std::int64_t W = whole.qkv_width(), D = c.head_dim, half = D / 2, KV = c.kv_heads, H = c.heads;
  const std::int64_t capacity = seq + 3, kv_width = KV * D;
  const std::vector<double> qkv = random_bf16_values(whole.tokens() * W, 17 + static_cast<std::uint64_t>(seq));
  std::vector<float> cs, sn;
  rope_tables(capacity, D, whole.rope_theta, cs, sn);
  // Rotated, BF16-rounded q and k of token (b, t), slot (head, or H + kv head).
  const auto rotated = [&](std::int64_t b, std::int64_t t, std::int64_t slot) {
    std::vector<double> r(static_cast<std::size_t>(D));
    const double* x = qkv.data() + (b * seq + t) * W + slot * D;
    for (std::int64_t i = 0; i < half; ++i) {
      const float a = static_cast<float>(x[i]), bb = static_cast<float>(x[i + half]);
      const float co = cs[static_cast<std::size_t>(t * half + i)], si = sn[static_cast<std::size_t>(t * half + i)];
      const float p = a * co, q = bb * si, u = bb * co, v = a * si;  // unfused, as the kernel
      r[static_cast<std::size_t>(i)] = bf16(p - q);
      r[static_cast<std::size_t>(i + half)] = bf16(u + v);
    }
    return r;
  };

  Tensor keys = gpu->empty({c.batch * capacity, kv_width}, gpu->kv_cache_dtype());
  Tensor values = gpu->empty({c.batch * capacity, kv_width}, gpu->kv_cache_dtype());
  std::int64_t offset = 0;
  for (const std::int64_t chunk : c.chunks) {
    AttentionShape part = whole;
    part.seq = chunk;
    std::vector<double> in;
    for (std::int64_t b = 0; b < c.batch; ++b) {
      in.insert(in.end(), qkv.begin() + (b * seq + offset) * W, qkv.begin() + (b * seq + offset + chunk) * W);
    }
    Tensor t_in = gpu->empty({part.tokens(), W}, DType::bf16);
    gpu->upload(t_in, in);
    Tensor t_out = gpu->empty({part.tokens(), part.q_width()}, DType::bf16);
    gpu->attention_forward_cached(t_out, keys, values, t_in, part, offset);
    const std::vector<double> got = gpu->download(t_out);
    std::vector<double> want(got.size());
    for (std::int64_t b = 0; b < c.batch; ++b) {
      for (std::int64_t t = 0; t < chunk; ++t) {
        const std::int64_t pos = offset + t;
        for (std::int64_t h = 0; h < H; ++h) {
          const std::int64_t kvh = h / (H / KV);
          const std::vector<double> q = rotated(b, pos, h);
          std::vector<double> s(static_cast<std::size_t>(pos + 1));
          double top = -INFINITY, sum = 0;
          for (std::int64_t u = 0; u <= pos; ++u) {
            const std::vector<double> k = rotated(b, u, H + kvh);
            double dot = 0;
            for (std::int64_t i = 0; i < D; ++i) dot += q[static_cast<std::size_t>(i)] * k[static_cast<std::size_t>(i)];
            s[static_cast<std::size_t>(u)] = dot / std::sqrt(static_cast<double>(D));
            top = std::max(top, s[static_cast<std::size_t>(u)]);
          }
          for (double& x : s) sum += x = std::exp(x - top);
          for (std::int64_t i = 0; i < D; ++i) {
            double y = 0;
            for (std::int64_t u = 0; u <= pos; ++u) {
              y += s[static_cast<std::size_t>(u)] / sum * qkv[static_cast<std::size_t>((b * seq + u) * W + (H + KV + kvh) * D + i)];
            }
            want[static_cast<std::size_t>((b * chunk + t) * H * D + h * D + i)] = y;
          }
        }
      }
    }
    double largest = 0;
    for (double x : want) largest = std::max(largest, std::fabs(x));
    for (std::size_t i = 0; i < got.size(); ++i) {
      ASSERT_LE(std::fabs(got[i] - want[i]), bf16_ulp(want[i]) + 0x1p-14 * largest)
          << "chunk at " << offset << ", element " << i << ": gpu " << got[i] << ", reference " << want[i];
    }
    offset += chunk;
  }
  // Every position's rotated key and value, bit for bit.
  const std::vector<double> k_cache = gpu->download(keys), v_cache = gpu->download(values);
  for (std::int64_t b = 0; b < c.batch; ++b) {
    for (std::int64_t t = 0; t < seq; ++t) {
      for (std::int64_t h = 0; h < KV; ++h) {
        const std::vector<double> k = rotated(b, t, H + h);
        for (std::int64_t i = 0; i < D; ++i) {
          const std::size_t at = static_cast<std::size_t>((b * capacity + t) * kv_width + h * D + i);
          ASSERT_EQ(k_cache[at], k[static_cast<std::size_t>(i)]) << "key of position " << t;
          ASSERT_EQ(v_cache[at], qkv[static_cast<std::size_t>((b * seq + t) * W + (H + KV + h) * D + i)]);
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, CachedAttentionGpu,
                         ::testing::Values(Case{1, 4, 4, 64, {7, 1, 1}}, Case{2, 8, 2, 128, {5, 1, 3}},
                                           Case{1, 6, 3, 48, {1, 1, 1, 1}}, Case{1, 2, 1, 80, {300, 1, 1}},
                                           Case{3, 4, 1, 64, {33, 17}}));

// The model's cached pass on the GPU against its whole forward pass on the CPU, position by
// position (bf16 recipe). Both store activations in BF16, but the GPU rounds and sums in other
// places and orders than the CPU, so the GPU's own whole forward pass already differs from the
// CPU's; the cache may add no more than that: the cached logits must be within twice the GPU
// whole pass's distance from the CPU, plus 2^-8 of the largest logit (one BF16 ulp). Greedy
// choices must agree wherever the CPU's top two logits are further apart than that bound.
TEST(CachedForwardGpu, LogitsFollowTheCpusWholeForward) {
  if (!cuda_available()) GTEST_SKIP() << cuda_device_description();
  auto gpu = make_cuda_backend();
  auto cpu = make_cpu_backend();
  LlamaConfig c;
  c.size = "kv-test";
  c.vocab_size = 300;
  c.d_model = 256;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.max_seq_len = 64;
  c.init_std = 0.2;
  LlamaModel on_gpu(*gpu, c, make_recipe("bf16"), 9), on_cpu(*cpu, c, make_recipe("bf16"), 9);
  std::vector<std::int32_t> tokens(40);
  for (std::size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<std::int32_t>((i * 71 + 3) % 300);
  KvCache cache = on_gpu.make_kv_cache();
  for (std::size_t end = 20; end <= tokens.size(); ++end) {
    const std::size_t first = end == 20 ? 0 : end - 1;
    const std::vector<std::int32_t> fresh(tokens.begin() + static_cast<std::ptrdiff_t>(first),
                                          tokens.begin() + static_cast<std::ptrdiff_t>(end));
    Tensor g_ids = gpu->empty({static_cast<std::int64_t>(fresh.size())}, DType::i32);
    gpu->upload_tokens(g_ids, fresh);
    const std::vector<double> got = gpu->download(on_gpu.forward_cached(g_ids, static_cast<std::int64_t>(fresh.size()), cache));
    const std::vector<std::int32_t> prefix(tokens.begin(), tokens.begin() + static_cast<std::ptrdiff_t>(end));
    Tensor c_ids = cpu->empty({static_cast<std::int64_t>(end)}, DType::i32);
    cpu->upload_tokens(c_ids, prefix);
    const Tensor all = on_cpu.forward_logits(c_ids, 1, static_cast<std::int64_t>(end));
    const std::vector<double> every = cpu->download(all);
    // Both rows are the vocabulary, then padding: the GPU pads its LM head to a multiple of 128.
    ASSERT_EQ(got.size(), static_cast<std::size_t>(on_gpu.padded_vocab()));
    const std::vector<double> want(every.end() - all.dim(1), every.end() - all.dim(1) + c.vocab_size);
    Tensor w_ids = gpu->empty({static_cast<std::int64_t>(end)}, DType::i32);
    gpu->upload_tokens(w_ids, prefix);
    const Tensor whole = on_gpu.forward_logits(w_ids, 1, static_cast<std::int64_t>(end));
    const std::vector<double> gpu_every = gpu->download(whole);
    const std::vector<double> gpu_whole(gpu_every.end() - whole.dim(1), gpu_every.end() - whole.dim(1) + c.vocab_size);
    double largest = 0, whole_error = 0, cached_error = 0;
    for (std::size_t i = 0; i < want.size(); ++i) {
      largest = std::max(largest, std::fabs(want[i]));
      whole_error = std::max(whole_error, std::fabs(gpu_whole[i] - want[i]));
      cached_error = std::max(cached_error, std::fabs(got[i] - want[i]));
    }
    const double bound = 2 * whole_error + 0x1p-8 * largest;
    ASSERT_LE(cached_error, bound) << "at " << end << ": the GPU's whole pass is " << whole_error << " from the CPU's";
    std::vector<double> sorted(want.begin(), want.end());
    std::sort(sorted.rbegin(), sorted.rend());
    if (sorted[0] - sorted[1] > 2 * bound) {
      EXPECT_EQ(std::max_element(got.begin(), got.begin() + c.vocab_size) - got.begin(),
                std::max_element(want.begin(), want.end()) - want.begin());
    }
  }
}

}  // namespace
}  // namespace quartet

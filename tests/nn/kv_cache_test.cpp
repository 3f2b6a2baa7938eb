// Sampling with a key/value cache (docs/sampling.md): the cached attention operation, the
// model's cached forward pass and the cached sampler, each against what computes the same
// thing without a cache (attention_forward, forward_logits, the recomputing sampler), plus a
// hand-computed attention example.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <set>

#include "quartet/error.h"
#include "quartet/nn/generate.h"
#include "quartet/nn/llama.h"
#include "support/error_of.h"

namespace quartet {
namespace {

using testing::error_of;

std::vector<double> random_values(std::int64_t n, std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<double> v(static_cast<std::size_t>(n));
  for (double& x : v) x = normal(gen);
  return v;
}

Tensor make_tensor(Backend& be, const Shape& shape, DType dtype, const std::vector<double>& values) {
  Tensor t = be.empty(shape, dtype);
  be.upload(t, values);
  return t;
}

// Rows [first, first + count) of every sequence of a [batch * seq, width] tensor's values.
std::vector<double> rows_of(const std::vector<double>& all, std::int64_t batch, std::int64_t seq, std::int64_t width,
                            std::int64_t first, std::int64_t count) {
  std::vector<double> out;
  for (std::int64_t b = 0; b < batch; ++b) {
    const auto begin = all.begin() + (b * seq + first) * width;
    out.insert(out.end(), begin, begin + count * width);
  }
  return out;
}

// The whole sequence through attention_forward against the same positions fed to the cache in
// chunks (a prefill, single positions, a chunk of several): the same bits, on the FP32 backend
// (BF16 activations) and on the FP64 one.
TEST(CachedAttention, ChunkedPositionsGiveTheWholeSequencesBits) {
  for (const bool fp64 : {false, true}) {
    auto be = fp64 ? make_cpu_reference_backend() : make_cpu_backend();
    const DType act = be->activation_dtype();
    AttentionShape s{2, 9, 4, 2, 8, 10000.0};
    const std::vector<double> qkv = random_values(s.tokens() * s.qkv_width(), 7);
    Tensor whole_in = make_tensor(*be, {s.tokens(), s.qkv_width()}, act, qkv);
    Tensor whole_out = be->empty({s.tokens(), s.q_width()}, act);
    AttentionSaved saved;
    be->attention_forward(whole_out, saved, whole_in, s);
    const std::vector<double> expected = be->download(whole_out);

    const std::int64_t capacity = 12, kv_width = s.kv_heads * s.head_dim;
    Tensor keys = be->empty({s.batch * capacity, kv_width}, be->kv_cache_dtype());
    Tensor values = be->empty({s.batch * capacity, kv_width}, be->kv_cache_dtype());
    std::int64_t offset = 0;
    for (const std::int64_t chunk : {4, 1, 1, 3}) {
      AttentionShape part = s;
      part.seq = chunk;
      Tensor in = make_tensor(*be, {part.tokens(), s.qkv_width()}, act,
                              rows_of(qkv, s.batch, s.seq, s.qkv_width(), offset, chunk));
      Tensor out = be->empty({part.tokens(), s.q_width()}, act);
      be->attention_forward_cached(out, keys, values, in, part, offset);
      const std::vector<double> got = be->download(out);
      const std::vector<double> want = rows_of(expected, s.batch, s.seq, s.q_width(), offset, chunk);
      ASSERT_EQ(got.size(), want.size());
      for (std::size_t i = 0; i < got.size(); ++i) {
        ASSERT_EQ(got[i], want[i]) << (fp64 ? "fp64" : "fp32") << " chunk at " << offset << ", element " << i;
      }
      offset += chunk;
    }
  }
}

// One head of dimension 2 (inverse frequency theta^0 = 1: position p rotates by p radians), q =
// k = (1, 0) at both positions, v0 = (1, 2), v1 = (3, -1). Position 1's scores, scaled by
// 1/sqrt(2): q rotated by 1 against k rotated by 0 gives cos(1), against itself 1.
TEST(CachedAttention, HandComputedExampleAtAnOffset) {
  auto be = make_cpu_reference_backend();
  const AttentionShape s{1, 1, 1, 1, 2, 10000.0};
  Tensor keys = be->empty({4, 2}, DType::f64), values = be->empty({4, 2}, DType::f64);
  Tensor out = be->empty({1, 2}, DType::f64);
  Tensor first = make_tensor(*be, {1, 6}, DType::f64, {1, 0, 1, 0, 1, 2});
  be->attention_forward_cached(out, keys, values, first, s, 0);
  EXPECT_EQ(be->download(out), (std::vector<double>{1, 2})) << "position 0 attends to itself only";
  Tensor second = make_tensor(*be, {1, 6}, DType::f64, {1, 0, 1, 0, 3, -1});
  be->attention_forward_cached(out, keys, values, second, s, 1);
  const double a = std::exp(std::cos(1.0) / std::sqrt(2.0)), b = std::exp(1.0 / std::sqrt(2.0));
  const double p0 = a / (a + b), p1 = b / (a + b);
  const std::vector<double> y = be->download(out);
  EXPECT_NEAR(y[0], p0 * 1 + p1 * 3, 1e-14);
  EXPECT_NEAR(y[1], p0 * 2 + p1 * -1, 1e-14);
  // The cache holds position 1's key rotated by 1 radian: (cos 1, sin 1).
  const std::vector<double> k = be->download(keys);
  EXPECT_NEAR(k[2], std::cos(1.0), 1e-15);
  EXPECT_NEAR(k[3], std::sin(1.0), 1e-15);
}

TEST(CachedAttention, BadArgumentsAreNamed) {
  auto be = make_cpu_backend();
  const AttentionShape s{1, 2, 2, 1, 4, 10000.0};
  Tensor in = be->zeros({2, 16}, DType::bf16), out = be->empty({2, 8}, DType::bf16);
  Tensor keys = be->empty({5, 4}, DType::f32), values = be->empty({5, 4}, DType::f32);
  EXPECT_NE(error_of([&] { be->attention_forward_cached(out, keys, values, in, s, 4); })
                .find("2 new positions at offset 4 do not fit a cache of 5 positions"),
            std::string::npos);
  EXPECT_NE(error_of([&] { be->attention_forward_cached(out, keys, values, in, s, -1); }).find("offset -1"),
            std::string::npos);
  Tensor bf16_keys = be->empty({5, 4}, DType::bf16);
  EXPECT_NE(error_of([&] { be->attention_forward_cached(out, bf16_keys, values, in, s, 0); }).find("key cache"),
            std::string::npos);
  Tensor narrow = be->empty({5, 2}, DType::f32);
  EXPECT_NE(error_of([&] { be->attention_forward_cached(out, narrow, values, in, s, 0); }).find("[5, 2]"),
            std::string::npos);
}

// A small model whose every GEMM fits every recipe's rotations (multiples of 128).
LlamaConfig small_config(std::int64_t window) {
  LlamaConfig c;
  c.size = "kv-test";
  c.vocab_size = 97;
  c.d_model = 128;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.ffn_hidden = 128;
  c.max_seq_len = window;
  c.init_std = 0.2;  // logits far enough from uniform that sampling is not a coin toss
  return c;
}

std::vector<std::int32_t> some_tokens(std::int64_t n, std::int32_t vocab) {
  std::vector<std::int32_t> t(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) t[static_cast<std::size_t>(i)] = static_cast<std::int32_t>((i * 37 + 5) % vocab);
  return t;
}

std::vector<double> last_logits_recomputed(Backend& be, LlamaModel& model, const std::vector<std::int32_t>& context) {
  Tensor ids = be.empty({static_cast<std::int64_t>(context.size())}, DType::i32);
  be.upload_tokens(ids, context);
  const Tensor logits = model.forward_logits(ids, 1, static_cast<std::int64_t>(context.size()));
  const std::vector<double> all = be.download(logits);
  return std::vector<double>(all.end() - logits.dim(1), all.end());
}

std::vector<double> logits_cached(Backend& be, LlamaModel& model, KvCache& cache, const std::vector<std::int32_t>& ids) {
  Tensor t = be.empty({static_cast<std::int64_t>(ids.size())}, DType::i32);
  be.upload_tokens(t, ids);
  return be.download(model.forward_cached(t, static_cast<std::int64_t>(ids.size()), cache));
}

// Where the model says a cached pass computes the same thing, a prefill and then one token at a
// time give, at every position, the bits of the last row of a forward pass over the whole
// prefix. Bit for bit holds for this small model because activations are stored in BF16: the
// BLAS rounds a row differently by its place among a call's rows (docs/sampling.md), and those
// last FP32 bits reach a BF16 value only at a rounding boundary, which none of this model's
// activations meets with the OpenBLAS measured there.
TEST(CachedForward, ExactRecipesGiveTheWholeForwardsLastLogits) {
  auto be = make_cpu_backend();
  const std::vector<std::int32_t> tokens = some_tokens(12, 97);
  for (const std::string recipe : {"bf16", "quartet1", "quartet1-sr"}) {
    LlamaModel model(*be, small_config(16), make_recipe(recipe), 3);
    EXPECT_EQ(model.kv_cache_mismatch(), "") << recipe;
    KvCache cache = model.make_kv_cache();
    EXPECT_EQ(cache.capacity, 16);
    for (std::size_t end = 5; end <= tokens.size(); ++end) {
      const std::vector<std::int32_t> prefix(tokens.begin(), tokens.begin() + static_cast<std::ptrdiff_t>(end));
      const std::vector<std::int32_t> fresh(tokens.begin() + (end == 5 ? 0 : static_cast<std::ptrdiff_t>(end - 1)),
                                            tokens.begin() + static_cast<std::ptrdiff_t>(end));
      const std::vector<double> got = logits_cached(*be, model, cache, fresh);
      EXPECT_EQ(cache.length, static_cast<std::int64_t>(end));
      EXPECT_EQ(got, last_logits_recomputed(*be, model, prefix)) << recipe << " at length " << end;
    }
  }
}

// NVFP4 recipes scale activations by the whole tensor's maximum: the model says so, and the
// claim is real (one position at a time gives other logits), which is why the sampler
// recomputes for them.
TEST(CachedForward, Nvfp4RecipesAreReportedAndDoDiffer) {
  auto be = make_cpu_backend();
  const std::vector<std::int32_t> tokens = some_tokens(8, 97);
  for (const std::string recipe : {"nvidia", "nvidia+4/6", "tetrajet2", "quartet2"}) {
    LlamaModel model(*be, small_config(16), make_recipe(recipe), 3);
    const std::string why = model.kv_cache_mismatch();
    EXPECT_NE(why.find("NVFP4"), std::string::npos) << recipe << ": " << why;
    EXPECT_NE(why.find(recipe), std::string::npos) << why;
    KvCache cache = model.make_kv_cache();
    (void)logits_cached(*be, model, cache, std::vector<std::int32_t>(tokens.begin(), tokens.end() - 1));
    EXPECT_NE(logits_cached(*be, model, cache, {tokens.back()}), last_logits_recomputed(*be, model, tokens)) << recipe;
  }
  // A model whose every block is BF16 quantizes nothing: exact whatever its recipe.
  LlamaConfig all_bf16 = small_config(16);
  all_bf16.bf16_blocks_first = 2;
  EXPECT_EQ(LlamaModel(*be, all_bf16, make_recipe("nvidia"), 3).kv_cache_mismatch(), "");
}

TEST(CachedForward, PositionsPastTheCapacityAreRefused) {
  auto be = make_cpu_backend();
  LlamaModel model(*be, small_config(8), make_recipe("bf16"), 3);
  KvCache cache = model.make_kv_cache();
  (void)logits_cached(*be, model, cache, some_tokens(6, 97));
  const std::string why = error_of([&] { (void)logits_cached(*be, model, cache, some_tokens(3, 97)); });
  EXPECT_NE(why.find("3 new positions after the 6 in the cache pass its capacity of 8"), std::string::npos) << why;
  EXPECT_EQ(cache.length, 6) << "a refused pass leaves the cache as it was";
}

// The cached sampler against the recomputing one: the same tokens for the same seed, greedy and
// sampled, for recipes with an exact cache and for one that falls back, with a prompt of
// several tokens and enough new tokens to cross the window (16 positions: prompt 3 + 29 new).
TEST(CachedSampler, SameTokensAsRecomputingAcrossTheWindow) {
  auto be = make_cpu_backend();
  const std::vector<std::int32_t> prompt = {4, 50, 23};
  struct Mode {
    double temperature;
    std::int64_t top_k;
  };
  for (const std::string recipe : {"bf16", "quartet1", "nvidia"}) {
    LlamaModel model(*be, small_config(16), make_recipe(recipe), 5);
    for (const Mode mode : {Mode{0, 40}, Mode{0.8, 40}, Mode{1.3, 0}}) {
      SamplingOptions o;
      o.max_tokens = 30;
      o.temperature = mode.temperature;
      o.top_k = mode.top_k;
      o.seed = 11;
      o.use_cache = false;
      const Generation reference = generate_timed(*be, model, prompt, o);
      o.use_cache = true;
      const Generation cached = generate_timed(*be, model, prompt, o);
      const std::string what = recipe + " temperature " + std::to_string(mode.temperature);
      ASSERT_EQ(reference.tokens.size(), 30u) << what;
      EXPECT_EQ(cached.tokens, reference.tokens) << what;
      EXPECT_EQ(cached.stats.cached, recipe != "nvidia") << what;
      EXPECT_FALSE(reference.stats.cached);
      EXPECT_EQ(cached.stats.prefill_tokens, 3) << what;
      EXPECT_EQ(cached.stats.decode_steps, 29) << what;
      // Step i sees 3 + i tokens: past the window of 16 from step 14 on, 16 of the 29 steps.
      EXPECT_EQ(cached.stats.recomputed_steps, recipe != "nvidia" ? 16 : 29) << what;
      if (mode.temperature > 1) {
        const std::set<std::int32_t> distinct(cached.tokens.begin(), cached.tokens.end());
        EXPECT_GT(distinct.size(), 5u) << what << ": a sample this varied shows the draws are compared";
      }
    }
  }
}

// A prompt longer than the window: the first step already conditions on its last 16 tokens.
TEST(CachedSampler, PromptLongerThanTheWindow) {
  auto be = make_cpu_backend();
  LlamaModel model(*be, small_config(16), make_recipe("bf16"), 5);
  const std::vector<std::int32_t> prompt = some_tokens(21, 97);
  SamplingOptions o;
  o.max_tokens = 6;
  o.seed = 2;
  o.use_cache = false;
  const Generation reference = generate_timed(*be, model, prompt, o);
  o.use_cache = true;
  const Generation cached = generate_timed(*be, model, prompt, o);
  EXPECT_EQ(cached.tokens, reference.tokens);
  EXPECT_EQ(cached.stats.prefill_tokens, 16);
  EXPECT_EQ(cached.stats.recomputed_steps, 5);
}

}  // namespace
}  // namespace quartet

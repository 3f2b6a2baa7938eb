#include "quartet/nn/generate.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>

#include "quartet/error.h"
#include "quartet/numerics/philox.h"

namespace quartet {

namespace {

void check_request(const std::vector<std::int32_t>& prompt, const SamplingOptions& o) {
  if (prompt.empty()) throw Error("generate: the prompt is empty (start with <|endoftext|> for an unconditional sample)");
  if (o.max_tokens < 0 || !(o.temperature >= 0) || o.top_k < 0) {
    throw Error(fmt::format("generate: invalid sampling options (tokens {}, temperature {}, top-k {})", o.max_tokens,
                            o.temperature, o.top_k));
  }
}

// The token of step `step` from the vocabulary's logits: the most likely one when greedy, else
// one drawn among the top k with probabilities softmax(logits / temperature), from the
// step's own random number (so a sample depends only on the seed and the logits).
std::int32_t draw_token(const std::vector<double>& logits, const SamplingOptions& o, std::int64_t step) {
  if (o.temperature == 0) {
    return static_cast<std::int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  }
  const auto vocab = static_cast<std::int64_t>(logits.size());
  std::vector<std::int32_t> order(static_cast<std::size_t>(vocab));
  std::iota(order.begin(), order.end(), 0);
  const auto k = static_cast<std::size_t>(o.top_k > 0 ? std::min(o.top_k, vocab) : vocab);
  std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(k), order.end(),
                    [&](std::int32_t a, std::int32_t b) { return logits[a] > logits[b]; });
  std::vector<double> p(k);
  const double top = logits[order[0]];
  double sum = 0;
  for (std::size_t j = 0; j < k; ++j) sum += p[j] = std::exp((logits[order[j]] - top) / o.temperature);
  const RandomContext rng{o.seed, 0x5A3D1E00u, 0};
  const PhiloxWords w = philox_block(rng, 0, static_cast<std::uint32_t>(step));
  double u = (static_cast<double>(w.x) + 0.5) * 0x1p-32 * sum;
  for (std::size_t j = 0; j < k; ++j) {
    if ((u -= p[j]) <= 0) return order[j];
  }
  return order[k - 1];
}

// The vocabulary's part of the last row of [rows, padded vocabulary] logits.
std::vector<double> last_row_logits(Backend& backend, const Tensor& logits, std::int64_t vocab) {
  const std::vector<double> all = backend.download(logits);
  const auto row = all.end() - logits.dim(1);  // vocabulary, then padding
  return std::vector<double>(row, row + vocab);
}

Tensor token_tensor(Backend& backend, std::vector<std::int32_t>::const_iterator first,
                    std::vector<std::int32_t>::const_iterator last) {
  const std::vector<std::int32_t> ids(first, last);
  Tensor t = backend.empty({static_cast<std::int64_t>(ids.size())}, DType::i32);
  backend.upload_tokens(t, ids);
  return t;
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

double GenerationStats::prefill_tokens_per_second() const {
  return prefill_seconds > 0 ? static_cast<double>(prefill_tokens) / prefill_seconds : 0;
}

double GenerationStats::decode_tokens_per_second() const {
  return decode_seconds > 0 ? static_cast<double>(decode_steps) / decode_seconds : 0;
}

Generation generate_timed(Backend& backend, LlamaModel& model, const std::vector<std::int32_t>& prompt,
                          const SamplingOptions& o) {
  check_request(prompt, o);
  const std::int64_t vocab = model.config().vocab_size, window = model.config().max_seq_len;
  Generation g;
  GenerationStats& stats = g.stats;
  if (o.use_cache) stats.why_not_cached = model.kv_cache_mismatch();
  stats.cached = o.use_cache && stats.why_not_cached.empty();
  KvCache cache;
  if (stats.cached) cache = model.make_kv_cache();
  std::vector<std::int32_t> tokens = prompt;
  for (std::int64_t i = 0; i < o.max_tokens; ++i) {
    const auto start = std::chrono::steady_clock::now();
    const auto length = static_cast<std::int64_t>(tokens.size());
    // The context: the last `window` tokens, at positions 0 .. window - 1.
    const std::int64_t context = std::min(length, window);
    bool recomputed = true;
    std::int64_t positions = context;  // this step's forward pass
    std::vector<double> logits;
    if (!stats.cached) {
      const Tensor ids = token_tensor(backend, tokens.end() - context, tokens.end());
      logits = last_row_logits(backend, model.forward_logits(ids, 1, context), vocab);
    } else {
      // Past the window every position moves at each step: nothing cached applies.
      if (length > window) cache.length = 0;
      recomputed = cache.length == 0 && i > 0;
      positions = context - cache.length;
      const Tensor ids = token_tensor(backend, tokens.end() - positions, tokens.end());
      logits = last_row_logits(backend, model.forward_cached(ids, positions, cache), vocab);
    }
    const std::int32_t next = draw_token(logits, o, i);
    const double seconds = seconds_since(start);
    if (i == 0) {
      stats.prefill_tokens = positions;
      stats.prefill_seconds = seconds;
    } else {
      ++stats.decode_steps;
      stats.decode_seconds += seconds;
      stats.recomputed_steps += recomputed ? 1 : 0;
    }
    tokens.push_back(next);
    g.tokens.push_back(next);
    if (next == o.stop_token) break;
  }
  return g;
}

std::vector<std::int32_t> generate(Backend& backend, LlamaModel& model, const std::vector<std::int32_t>& prompt,
                                   const SamplingOptions& options) {
  return generate_timed(backend, model, prompt, options).tokens;
}

}  // namespace quartet

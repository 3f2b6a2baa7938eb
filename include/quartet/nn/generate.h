// Text generation from a model. Tokens are drawn with temperature and top-k from counter-based
// random numbers, so a sample is a pure function of the seed and of the logits.
//
// Two ways to get the logits (docs/sampling.md):
//  * with a key/value cache (the default): the prompt goes through one forward pass (the
//    prefill), then each new token through a pass of its own that reads the earlier positions'
//    keys and values from the cache: one token's work per token;
//  * by recomputation (the reference): the whole context goes through a forward pass for every
//    new token.
// Both condition each token on the last max_seq_len tokens at positions 0, 1, ...: once the
// context is longer than that window, the positions of every token change at each step and
// no cached key or value applies, so the cached sampler recomputes the window for each such
// step. Where a cached pass would give other logits (LlamaModel::kv_cache_mismatch: NVFP4
// activation scales span the context) the sampler recomputes every step. The tokens are the
// same either way for the same seed, except where two candidates are as close as the GEMM
// library's row-placement rounding (docs/sampling.md).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "quartet/nn/llama.h"

namespace quartet {

struct SamplingOptions {
  std::int64_t max_tokens = 200;
  double temperature = 0.8;  // 0: greedy
  std::int64_t top_k = 40;   // 0: the whole vocabulary
  std::uint64_t seed = 1;
  std::int32_t stop_token = -1;  // stop after producing this token (e.g. <|endoftext|>)
  bool use_cache = true;         // false: recompute the context for every token (the reference)
};

// What a generation did and how long it took (wall-clock, each step's logits read back).
struct GenerationStats {
  bool cached = false;          // whether the key/value cache was used
  std::string why_not_cached;   // set when use_cache was asked for and the model cannot use it
  std::int64_t prefill_tokens = 0;   // positions of the first step's forward pass (the prompt)
  double prefill_seconds = 0;        // the first step: its forward pass and its token
  std::int64_t decode_steps = 0;     // the steps after the first
  double decode_seconds = 0;
  std::int64_t recomputed_steps = 0; // steps after the first that recomputed their context

  double prefill_tokens_per_second() const;  // 0 when nothing was timed
  double decode_tokens_per_second() const;
};

struct Generation {
  std::vector<std::int32_t> tokens;  // the new tokens, not the prompt
  GenerationStats stats;
};

// Throws Error for an empty prompt, invalid options or a token outside the vocabulary.
Generation generate_timed(Backend& backend, LlamaModel& model, const std::vector<std::int32_t>& prompt,
                          const SamplingOptions& options);
std::vector<std::int32_t> generate(Backend& backend, LlamaModel& model, const std::vector<std::int32_t>& prompt,
                                   const SamplingOptions& options);

}  // namespace quartet

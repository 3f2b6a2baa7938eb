// Text generation from a model: the whole context (up to the model's maximum sequence length)
// goes through a forward pass for every new token; tokens are drawn with temperature and
// top-k from counter-based random numbers, so a sample is a pure function of the seed.
#pragma once

#include <cstdint>
#include <vector>

#include "quartet/nn/llama.h"

namespace quartet {

struct SamplingOptions {
  std::int64_t max_tokens = 200;
  double temperature = 0.8;  // 0: greedy
  std::int64_t top_k = 40;   // 0: the whole vocabulary
  std::uint64_t seed = 1;
  std::int32_t stop_token = -1;  // stop after producing this token (e.g. <|endoftext|>)
};

std::vector<std::int32_t> generate(Backend& backend, LlamaModel& model, const std::vector<std::int32_t>& prompt,
                                   const SamplingOptions& options);

}  // namespace quartet

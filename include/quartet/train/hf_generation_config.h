// generation_config.json of a Hugging Face export: the token ids and the sampling defaults of
// `quartet sample`, so that transformers' model.generate() without arguments samples as
// `quartet sample` does (the same distribution; the random numbers differ) and stops where it
// stops.
#pragma once

#include <cstdint>
#include <string>

#include "quartet/nn/generate.h"

namespace quartet {

// The file's JSON text (ending in a newline): bos, eos and pad are `eot` (<|endoftext|>, which
// starts every document and ends a sample), the rest follows `defaults` (temperature 0 is
// greedy: do_sample false). Throws Error for options transformers cannot express (a negative
// temperature or top-k, no tokens to generate).
std::string hf_generation_config_json(const SamplingOptions& defaults, std::int32_t eot);

}  // namespace quartet

#include "quartet/train/hf_generation_config.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "quartet/error.h"

namespace quartet {

std::string hf_generation_config_json(const SamplingOptions& defaults, std::int32_t eot) {
  if (!(defaults.temperature >= 0) || defaults.top_k < 0 || defaults.max_tokens < 1) {
    throw Error(fmt::format("generation_config.json: cannot express temperature {}, top-k {}, {} tokens",
                            defaults.temperature, defaults.top_k, defaults.max_tokens));
  }
  nlohmann::ordered_json g;
  g["bos_token_id"] = eot;
  g["eos_token_id"] = eot;  // quartet sample stops after <|endoftext|>; generate() stops at eos
  g["pad_token_id"] = eot;
  const bool greedy = defaults.temperature == 0;
  g["do_sample"] = !greedy;
  if (!greedy) {
    g["temperature"] = defaults.temperature;
    g["top_k"] = defaults.top_k;  // 0 is "the whole vocabulary" in transformers too
    g["top_p"] = 1.0;             // we have no nucleus cut; transformers' default is 1.0 as well
  }
  g["max_new_tokens"] = defaults.max_tokens;
  return g.dump(2) + "\n";
}

}  // namespace quartet

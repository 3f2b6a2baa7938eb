// generation_config.json carries `quartet sample`'s defaults (constants below are the values
// `quartet sample --help` documents) and <|endoftext|> as bos, eos and pad.
#include "quartet/train/hf_generation_config.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "support/error_of.h"

namespace quartet {
namespace {

using nlohmann::json;

TEST(HfGenerationConfig, SamplesLikeQuartetSampleAndStopsAtEndOfText) {
  const json g = json::parse(hf_generation_config_json(SamplingOptions{}, 256));
  EXPECT_EQ(g.at("bos_token_id"), 256);
  EXPECT_EQ(g.at("eos_token_id"), 256);
  EXPECT_EQ(g.at("pad_token_id"), 256);
  EXPECT_EQ(g.at("do_sample"), true);
  EXPECT_DOUBLE_EQ(g.at("temperature").get<double>(), 0.8);
  EXPECT_EQ(g.at("top_k"), 40);
  EXPECT_DOUBLE_EQ(g.at("top_p").get<double>(), 1.0);
  EXPECT_EQ(g.at("max_new_tokens"), 200);
}

TEST(HfGenerationConfig, TemperatureZeroIsGreedy) {
  SamplingOptions o;
  o.temperature = 0;
  o.max_tokens = 16;
  const json g = json::parse(hf_generation_config_json(o, 50256));
  EXPECT_EQ(g.at("do_sample"), false);
  EXPECT_FALSE(g.contains("temperature"));
  EXPECT_EQ(g.at("max_new_tokens"), 16);
  EXPECT_EQ(g.at("eos_token_id"), 50256);
}

TEST(HfGenerationConfig, RefusesWhatTransformersCannotExpress) {
  SamplingOptions o;
  o.top_k = -1;
  const std::string e = quartet::testing::error_of([&] { hf_generation_config_json(o, 256); });
  EXPECT_NE(e.find("top-k -1"), std::string::npos) << e;
}

}  // namespace
}  // namespace quartet

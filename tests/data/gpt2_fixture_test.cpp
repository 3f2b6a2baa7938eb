// Our GPT-2 tokenizer against ids produced by tiktoken 0.14 (encode_ordinary, GPT-2's pattern,
// ranks from the same vocabulary files), generated on the GPU machine by
// scripts/make_gpt2_fixtures.py: hand-written edge cases, random Unicode strings and excerpts
// of the corpus.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "quartet/data/tokenizer.h"
#include "quartet/util/files.h"

namespace quartet {
namespace {

TEST(Gpt2Tokenizer, MatchesTiktokenOnEveryFixture) {
  const auto fixtures = nlohmann::json::parse(read_file(QUARTET_TEST_DATA_DIR "/fixtures/gpt2_tiktoken.json"));
  const auto tokenizer = make_tokenizer("gpt2");
  const auto& cases = fixtures.at("cases");
  ASSERT_GE(cases.size(), 150u);
  int mismatches = 0;
  std::size_t tokens = 0;
  for (const auto& c : cases) {
    const std::string text = c.at("text");
    const std::vector<std::int32_t> expected = c.at("ids");
    const std::vector<std::int32_t> got = tokenizer->encode(text);
    tokens += expected.size();
    if (got != expected && ++mismatches <= 3) {
      ADD_FAILURE() << "text: " << nlohmann::json(text).dump() << "\n expected " << nlohmann::json(expected).dump()
                    << "\n got      " << nlohmann::json(got).dump();
    }
    EXPECT_EQ(tokenizer->decode(got), text);
  }
  EXPECT_EQ(mismatches, 0) << "of " << cases.size() << " texts";
  EXPECT_GT(tokens, 20000u);
}

}  // namespace
}  // namespace quartet

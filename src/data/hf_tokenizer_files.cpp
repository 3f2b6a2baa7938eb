// Writes a byte-level BPE tokenizer in the `tokenizers` library's serialization (tokenizer.json)
// plus the transformers settings around it (tokenizer_config.json, special_tokens_map.json).
//
// The `tokenizers` BPE model works on strings, not bytes: its ByteLevel pre-tokenizer first maps
// every byte of the text to a printable character (GPT-2's bytes_to_unicode table) and its
// ByteLevel decoder maps them back. So the vocabulary is written as each token's bytes spelled
// in those characters, and the merges as pairs of such strings. For the byte tokenizer this is
// 256 one-character tokens with ids equal to the byte values and no merges: any text then
// encodes to one token per byte, in our order, whatever the pre-tokenizer's split.
#include "quartet/data/hf_tokenizer_files.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>
#include <unordered_map>
#include <vector>

#include "quartet/error.h"

namespace quartet {

namespace {

using Json = nlohmann::ordered_json;  // keeps the order written, so the files read like the originals

constexpr const char* kEndOfText = "<|endoftext|>";

// The ByteLevel alphabet: printable bytes stand for themselves, the other 68 (controls, space,
// DEL, NBSP, soft hyphen) for U+0100 upwards in byte order, so that no token holds whitespace.
std::vector<std::string> byte_level_alphabet() {
  std::vector<std::string> spelled(256);
  std::uint32_t next = 0x100;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    const std::uint32_t cp = printable ? static_cast<std::uint32_t>(b) : next++;
    // Every code point here is below U+0800: one or two bytes of UTF-8.
    spelled[static_cast<std::size_t>(b)] =
        cp < 0x80 ? std::string(1, static_cast<char>(cp))
                  : std::string{static_cast<char>(0xC0 | (cp >> 6)), static_cast<char>(0x80 | (cp & 0x3F))};
  }
  return spelled;
}

std::string spell(std::string_view bytes, const std::vector<std::string>& alphabet) {
  std::string out;
  for (char c : bytes) out += alphabet[static_cast<unsigned char>(c)];
  return out;
}

// The special token as transformers describes it (tokenizer.json's added_tokens and
// tokenizer_config.json's added_tokens_decoder use the same fields).
Json added_token(std::int32_t id, bool with_id) {
  Json t;
  if (with_id) t["id"] = id;
  t["content"] = kEndOfText;
  t["single_word"] = false;
  t["lstrip"] = false;
  t["rstrip"] = false;
  t["normalized"] = false;
  t["special"] = true;
  return t;
}

// <|endoftext|> before the text: training put it before every document, and `quartet sample`
// puts it before the prompt, so transformers' tokenizer(prompt) gives what the model expects.
Json bos_template(std::int32_t eot) {
  const auto special = [](int type) { return Json{{"SpecialToken", {{"id", kEndOfText}, {"type_id", type}}}}; };
  const auto sequence = [](const char* id, int type) { return Json{{"Sequence", {{"id", id}, {"type_id", type}}}}; };
  Json p;
  p["type"] = "TemplateProcessing";
  p["single"] = Json::array({special(0), sequence("A", 0)});
  p["pair"] = Json::array({special(0), sequence("A", 0), special(1), sequence("B", 1)});
  p["special_tokens"] = {{kEndOfText, {{"id", kEndOfText}, {"ids", {eot}}, {"tokens", {kEndOfText}}}}};
  return p;
}

Json byte_level(bool add_prefix_space) {
  return {{"type", "ByteLevel"}, {"add_prefix_space", add_prefix_space}, {"trim_offsets", true}, {"use_regex", true}};
}

}  // namespace

HfTokenizerFiles hf_tokenizer_files(const Tokenizer& tokenizer, std::int64_t max_seq_len) {
  const std::vector<std::string> alphabet = byte_level_alphabet();
  const std::int32_t eot = tokenizer.eot();
  const std::int64_t n = tokenizer.vocab_size();
  if (eot < 0 || eot >= n) {
    throw Error(fmt::format("{} tokenizer: <|endoftext|> has id {}, outside its vocabulary of {}", tokenizer.name(),
                            eot, n));
  }

  // Every id's spelling; two ids with one spelling would make the vocabulary ambiguous.
  std::vector<std::string> spelled(static_cast<std::size_t>(n));
  std::unordered_map<std::string, std::int32_t> seen;
  for (std::int32_t id = 0; id < n; ++id) {
    const std::int32_t one[1] = {id};
    const std::string bytes = tokenizer.decode(one);
    if (id != eot && bytes.empty()) {
      throw Error(fmt::format("{} tokenizer: token {} stands for no bytes; a Hugging Face vocabulary cannot hold it",
                              tokenizer.name(), id));
    }
    std::string& s = spelled[static_cast<std::size_t>(id)];
    s = id == eot ? std::string(kEndOfText) : spell(bytes, alphabet);
    const auto [it, fresh] = seen.emplace(s, id);
    if (!fresh) {
      throw Error(fmt::format("{} tokenizer: tokens {} and {} are both '{}'; a Hugging Face vocabulary needs each "
                              "once",
                              tokenizer.name(), it->second, id, s));
    }
  }
  // Built from a range: ordered_json's operator[] searches the keys linearly, which for
  // GPT-2's 50257 would be about a billion comparisons (the spellings are unique, checked above).
  std::vector<std::pair<const std::string, Json>> entries;
  entries.reserve(spelled.size());
  for (std::int32_t id = 0; id < n; ++id) entries.emplace_back(spelled[static_cast<std::size_t>(id)], id);
  Json vocab(Json::object_t(entries.begin(), entries.end()));

  // "left right": no spelled token holds a space (the alphabet has none), so the one space
  // separates them unambiguously; this form is read by every version of `tokenizers`.
  Json merges = Json::array();
  for (const auto& [left, right] : tokenizer.merges()) {
    for (const std::int32_t id : {left, right}) {
      if (id < 0 || id >= n || id == eot) {
        throw Error(fmt::format("{} tokenizer: a merge uses token {}, which is not an ordinary token of its "
                                "vocabulary of {}",
                                tokenizer.name(), id, n));
      }
    }
    merges.push_back(spelled[static_cast<std::size_t>(left)] + " " + spelled[static_cast<std::size_t>(right)]);
  }

  Json model;
  model["type"] = "BPE";
  model["dropout"] = nullptr;
  model["unk_token"] = nullptr;  // every byte is in the vocabulary: nothing is unknown
  model["continuing_subword_prefix"] = "";
  model["end_of_word_suffix"] = "";
  model["fuse_unk"] = false;
  model["byte_fallback"] = false;
  model["ignore_merges"] = false;
  model["vocab"] = std::move(vocab);
  model["merges"] = std::move(merges);

  Json t;
  t["version"] = "1.0";
  t["truncation"] = nullptr;
  t["padding"] = nullptr;
  t["added_tokens"] = Json::array({added_token(eot, true)});
  t["normalizer"] = nullptr;
  t["pre_tokenizer"] = byte_level(false);  // GPT-2's split: ' ?\p{L}+' etc.; no space added in front
  t["post_processor"] = bos_template(eot);
  t["decoder"] = byte_level(true);
  t["model"] = std::move(model);

  Json config;
  config["tokenizer_class"] = "PreTrainedTokenizerFast";  // tokenizer.json as written, in transformers 4 and 5
  config["bos_token"] = kEndOfText;
  config["eos_token"] = kEndOfText;
  config["unk_token"] = kEndOfText;
  config["pad_token"] = kEndOfText;
  config["add_bos_token"] = true;
  config["add_eos_token"] = false;
  // Our tokenizers read "<|endoftext|>" in a text as its characters (the id only ever comes
  // from the document boundaries): transformers does too with this set.
  config["split_special_tokens"] = true;
  // Decoding must give the tokens' bytes, not text with spaces before punctuation removed.
  config["clean_up_tokenization_spaces"] = false;
  config["model_max_length"] = max_seq_len;
  config["added_tokens_decoder"] = {{std::to_string(eot), added_token(eot, false)}};

  Json special;
  for (const char* key : {"bos_token", "eos_token", "unk_token", "pad_token"}) special[key] = kEndOfText;

  return {t.dump(2) + "\n", config.dump(2) + "\n", special.dump(2) + "\n"};
}

}  // namespace quartet

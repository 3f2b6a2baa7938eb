// GPT-2 byte-level BPE, with ids identical to tiktoken's "gpt2" encoding (encode_ordinary:
// "<|endoftext|>" in the text is ordinary text; documents are separated by inserting the
// id 50256 explicitly).
//
// Text is split by GPT-2's pre-tokenizer regex (PCRE2: it needs Unicode classes and a
// lookahead); each piece's bytes start as single-byte tokens and the merges of vocab.bpe are
// applied lowest rank first (data/bpe.h). Merges are kept as (left id, right id) -> (rank, merged id), so
// BPE runs on integers. Invalid UTF-8 is replaced by U+FFFD first (as Python's
// errors="replace" would before tiktoken sees the text).
#define PCRE2_CODE_UNIT_WIDTH 8
#include <fmt/format.h>
#include <pcre2.h>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unordered_map>

#include "data/bpe.h"
#include "quartet/data/embedded.h"
#include "quartet/data/tokenizer.h"
#include "quartet/error.h"
#include "quartet/util/files.h"
#include "quartet/util/text.h"

namespace quartet {

namespace {

constexpr const char* kPattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
constexpr std::int32_t kEot = 50256;

// GPT-2's reversible byte -> printable code point map (bytes_to_unicode in the reference).
std::vector<std::uint32_t> byte_to_code_point() {
  std::vector<std::uint32_t> map(256, 0);
  std::vector<bool> direct(256, false);
  for (int b = '!'; b <= '~'; ++b) direct[b] = true;
  for (int b = 0xA1; b <= 0xAC; ++b) direct[b] = true;
  for (int b = 0xAE; b <= 0xFF; ++b) direct[b] = true;
  std::uint32_t next = 256;
  for (int b = 0; b < 256; ++b) map[b] = direct[b] ? static_cast<std::uint32_t>(b) : next++;
  return map;
}

// Decodes the UTF-8 of a mapped token string back to raw bytes.
std::string unmap(const std::string& s, const std::unordered_map<std::uint32_t, char>& inverse, const std::string& what) {
  std::string out;
  for (std::size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    std::uint32_t cp;
    int len;
    if (c < 0x80) {
      cp = c, len = 1;
    } else if ((c >> 5) == 6) {
      cp = c & 0x1F, len = 2;
    } else if ((c >> 4) == 14) {
      cp = c & 0x0F, len = 3;
    } else {
      throw Error(fmt::format("{}: unexpected byte in token '{}'", what, s));
    }
    if (i + static_cast<std::size_t>(len) > s.size()) throw Error(fmt::format("{}: truncated UTF-8 in token '{}'", what, s));
    for (int k = 1; k < len; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + static_cast<std::size_t>(k)]) & 0x3F);
    const auto it = inverse.find(cp);
    if (it == inverse.end()) throw Error(fmt::format("{}: character U+{:04X} is not in GPT-2's byte map", what, cp));
    out.push_back(it->second);
    i += static_cast<std::size_t>(len);
  }
  return out;
}

// Pieces longer than this are not cached: they are rare (a run of letters or symbols), and
// caching them would let one input pin gigabytes (the cache holds up to a million pieces).
constexpr std::size_t kMaxCachedPieceBytes = 256;

class Gpt2Tokenizer final : public Tokenizer {
 public:
  Gpt2Tokenizer(const std::string& encoder_json, const std::string& vocab_bpe, const std::string& origin) {
    const std::vector<std::uint32_t> map = byte_to_code_point();
    std::unordered_map<std::uint32_t, char> inverse;
    for (int b = 0; b < 256; ++b) inverse[map[static_cast<std::size_t>(b)]] = static_cast<char>(b);

    nlohmann::json encoder;
    try {
      encoder = nlohmann::json::parse(encoder_json);
    } catch (const nlohmann::json::exception& e) {
      throw Error(fmt::format("{}/encoder.json is not valid JSON: {}", origin, e.what()));
    }
    if (!encoder.is_object() || encoder.size() != 50257) {
      throw Error(fmt::format("{}/encoder.json should map 50257 tokens, found {}", origin, encoder.size()));
    }
    bytes_.resize(50257);
    std::vector<bool> seen(50257, false);
    for (const auto& [token, id] : encoder.items()) {
      // Only integers: nlohmann would convert 1.5 to 1 and 1e30 to anything (undefined).
      if (!id.is_number_integer() || id.get<std::int64_t>() < 0 || id.get<std::int64_t>() >= 50257) {
        throw Error(fmt::format("{}/encoder.json: token '{}' has id {}, expected an integer in [0, 50257)", origin,
                                token, id.dump()));
      }
      const auto i = static_cast<int>(id.get<std::int64_t>());
      if (seen[static_cast<std::size_t>(i)]) {
        throw Error(fmt::format("{}/encoder.json: id {} is given to more than one token (another is '{}')", origin, i,
                                token));
      }
      seen[static_cast<std::size_t>(i)] = true;
      if (i == kEot) continue;  // "<|endoftext|>" is special: it is never produced from text
      bytes_[static_cast<std::size_t>(i)] = unmap(token, inverse, origin + "/encoder.json");
      ids_[bytes_[static_cast<std::size_t>(i)]] = i;
    }
    for (int b = 0; b < 256; ++b) {
      const auto it = ids_.find(std::string(1, static_cast<char>(b)));
      if (it == ids_.end()) throw Error(fmt::format("{}/encoder.json lacks the single-byte token {}", origin, b));
      byte_id_[static_cast<std::size_t>(b)] = it->second;
    }
    std::istringstream lines(vocab_bpe);
    std::string line;
    std::int32_t rank = 0;
    while (std::getline(lines, line)) {
      if (line.empty() || line.rfind("#version", 0) == 0) continue;
      const std::size_t space = line.find(' ');
      if (space == std::string::npos) throw Error(fmt::format("{}/vocab.bpe: malformed merge '{}'", origin, line));
      const std::string a = unmap(line.substr(0, space), inverse, origin + "/vocab.bpe");
      const std::string b = unmap(line.substr(space + 1), inverse, origin + "/vocab.bpe");
      const auto ia = ids_.find(a), ib = ids_.find(b), im = ids_.find(a + b);
      if (ia == ids_.end() || ib == ids_.end() || im == ids_.end()) {
        throw Error(fmt::format("{}/vocab.bpe: merge '{}' refers to tokens not in encoder.json", origin, line));
      }
      merges_[detail::bpe_pair_key(ia->second, ib->second)] = {rank++, im->second};
    }
    if (rank != 50000) throw Error(fmt::format("{}/vocab.bpe should hold 50000 merges, found {}", origin, rank));
    detail::check_bpe_merge_order(merges_, origin + "/vocab.bpe");

    int error = 0;
    PCRE2_SIZE offset = 0;
    regex_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(kPattern), PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &error,
                           &offset, nullptr);
    if (regex_ == nullptr) throw Error("GPT-2 pre-tokenizer pattern failed to compile");
    jit_ = pcre2_jit_compile(regex_, PCRE2_JIT_COMPLETE) == 0;  // optional: the interpreter is correct too
  }

  ~Gpt2Tokenizer() override { pcre2_code_free(regex_); }
  Gpt2Tokenizer(const Gpt2Tokenizer&) = delete;
  Gpt2Tokenizer& operator=(const Gpt2Tokenizer&) = delete;

  std::string name() const override { return "gpt2"; }
  std::int64_t vocab_size() const override { return 50257; }
  std::int32_t eot() const override { return kEot; }

  std::vector<std::int32_t> encode(std::string_view raw) const override {
    const std::string text = sanitize_utf8(raw);
    std::vector<std::int32_t> out;
    // Freed on every way out, exceptions included.
    const std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> owner(
        pcre2_match_data_create_from_pattern(regex_, nullptr), &pcre2_match_data_free);
    pcre2_match_data* match = owner.get();
    PCRE2_SIZE start = 0;
    while (start < text.size()) {
      // The text is valid UTF-8 (sanitized above): skip PCRE2's check of the whole subject on
      // every call, which would make tokenization quadratic.
      const int rc = jit_ ? pcre2_jit_match(regex_, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), start,
                                            PCRE2_NO_UTF_CHECK, match, nullptr)
                          : pcre2_match(regex_, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), start,
                                        PCRE2_NO_UTF_CHECK, match, nullptr);
      // The alternatives cover every character, so a failure is a resource limit of PCRE2's
      // (match limit, JIT stack): refuse rather than drop the rest of the text silently.
      if (rc < 0) {
        PCRE2_UCHAR message[256];
        pcre2_get_error_message(rc, message, sizeof(message));
        throw Error(fmt::format("gpt2 tokenizer: the pre-tokenizer stopped at byte {} of {} ({})", start, text.size(),
                                reinterpret_cast<const char*>(message)));
      }
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(match);
      encode_piece(std::string_view(text).substr(ov[0], ov[1] - ov[0]), out);
      start = ov[1] > ov[0] ? ov[1] : ov[1] + 1;
    }
    return out;
  }

  std::string decode(std::span<const std::int32_t> ids) const override {
    std::string out;
    for (std::int32_t id : ids) {
      if (id < 0 || id >= 50257) throw Error(fmt::format("gpt2 tokenizer: id {} is outside the vocabulary of 50257", id));
      out += bytes_[static_cast<std::size_t>(id)];
    }
    return out;
  }

  std::int64_t token_bytes(std::int32_t id) const override {
    return static_cast<std::int64_t>(bytes_.at(static_cast<std::size_t>(id)).size());
  }

  std::vector<std::pair<std::int32_t, std::int32_t>> merges() const override {
    // The table is keyed by pair for encoding; the rank restores vocab.bpe's order.
    std::vector<std::pair<std::int32_t, std::pair<std::int32_t, std::int32_t>>> ranked;
    ranked.reserve(merges_.size());
    for (const auto& [key, merge] : merges_) {
      ranked.push_back({merge.rank, {static_cast<std::int32_t>(key >> 32), static_cast<std::int32_t>(key & 0xFFFFFFFFu)}});
    }
    std::sort(ranked.begin(), ranked.end());
    std::vector<std::pair<std::int32_t, std::int32_t>> out;
    out.reserve(ranked.size());
    for (const auto& r : ranked) out.push_back(r.second);
    return out;
  }

 private:
  void encode_piece(std::string_view piece, std::vector<std::int32_t>& out) const {
    const bool cacheable = piece.size() <= kMaxCachedPieceBytes;
    if (cacheable) {
      std::lock_guard<std::mutex> lock(cache_mutex_);
      const auto hit = cache_.find(std::string(piece));
      if (hit != cache_.end()) {
        out.insert(out.end(), hit->second.begin(), hit->second.end());
        return;
      }
    }
    std::vector<std::int32_t> bytes;
    bytes.reserve(piece.size());
    for (char c : piece) bytes.push_back(byte_id_[static_cast<unsigned char>(c)]);
    std::vector<std::int32_t> word = detail::bpe_merge(bytes, merges_);
    out.insert(out.end(), word.begin(), word.end());
    if (!cacheable) return;
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (cache_.size() < 1'000'000) cache_.emplace(std::string(piece), std::move(word));
  }

  friend detail::Gpt2BpeTables detail::gpt2_bpe_tables(const Tokenizer& tokenizer);

  std::vector<std::string> bytes_;
  std::unordered_map<std::string, std::int32_t> ids_;
  std::int32_t byte_id_[256] = {};
  detail::BpeMergeTable merges_;
  pcre2_code* regex_ = nullptr;
  bool jit_ = false;
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<std::int32_t>> cache_;
};

std::string load_vocabulary_file(const std::string& folder, const std::string& name) {
  if (folder.empty()) {
    const auto data = embedded_file("tokenizers/gpt2/" + name + ".gz");
    if (!data) throw Error("the program was built without the GPT-2 vocabulary files");
    return gunzip(*data, "embedded " + name);
  }
  for (const std::string& candidate : {name, name + ".gz"}) {
    const std::filesystem::path p = std::filesystem::path(folder) / candidate;
    if (std::filesystem::exists(p)) return read_text_file(p);
  }
  throw Error(fmt::format("{}: no {} (or {}.gz) there", folder, name, name));
}

}  // namespace

detail::Gpt2BpeTables detail::gpt2_bpe_tables(const Tokenizer& tokenizer) {
  const auto* gpt2 = dynamic_cast<const Gpt2Tokenizer*>(&tokenizer);
  if (gpt2 == nullptr) throw Error(fmt::format("the {} tokenizer has no BPE tables", tokenizer.name()));
  return {gpt2->merges_, gpt2->byte_id_};
}

std::unique_ptr<Tokenizer> make_gpt2_tokenizer(const std::string& folder) {
  return std::make_unique<Gpt2Tokenizer>(load_vocabulary_file(folder, "encoder.json"),
                                         load_vocabulary_file(folder, "vocab.bpe"),
                                         folder.empty() ? "embedded GPT-2 vocabulary" : folder);
}

std::unique_ptr<Tokenizer> make_tokenizer(const std::string& name) {
  if (name == "byte") return make_byte_tokenizer();
  if (name == "gpt2") return make_gpt2_tokenizer("");
  throw Error(fmt::format("unknown tokenizer '{}'; expected byte or gpt2", name));
}

}  // namespace quartet

#include <fmt/format.h>

#include "quartet/data/tokenizer.h"
#include "quartet/error.h"

namespace quartet {

namespace {

class ByteTokenizer final : public Tokenizer {
 public:
  std::string name() const override { return "byte"; }
  std::int64_t vocab_size() const override { return 257; }
  std::int32_t eot() const override { return 256; }

  std::vector<std::int32_t> encode(std::string_view text) const override {
    std::vector<std::int32_t> ids(text.size());
    for (std::size_t i = 0; i < text.size(); ++i) ids[i] = static_cast<unsigned char>(text[i]);
    return ids;
  }

  std::string decode(std::span<const std::int32_t> ids) const override {
    std::string out;
    out.reserve(ids.size());
    for (std::int32_t id : ids) {
      if (id < 0 || id > 256) throw Error(fmt::format("byte tokenizer: id {} is outside the vocabulary of 257", id));
      if (id != 256) out.push_back(static_cast<char>(id));
    }
    return out;
  }

  std::int64_t token_bytes(std::int32_t id) const override { return id == 256 ? 0 : 1; }
};

}  // namespace

std::unique_ptr<Tokenizer> make_byte_tokenizer() { return std::make_unique<ByteTokenizer>(); }

}  // namespace quartet

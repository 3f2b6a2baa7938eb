// libFuzzer target: the GPT-2 tokenizer on arbitrary text. Oracle: decoding the ids gives back
// the text with invalid UTF-8 replaced (the tokenizer's documented behaviour), and every id is
// in the vocabulary.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string_view>

#include "quartet/data/tokenizer.h"
#include "quartet/util/text.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const std::unique_ptr<quartet::Tokenizer> tokenizer = quartet::make_tokenizer("gpt2");
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const std::vector<std::int32_t> ids = tokenizer->encode(text);
  for (std::int32_t id : ids) {
    if (id < 0 || id >= 50256) std::abort();  // 50256 (<|endoftext|>) is never made from text
  }
  if (tokenizer->decode(ids) != quartet::sanitize_utf8(text)) std::abort();
  return 0;
}

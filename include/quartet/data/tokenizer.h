// Tokenizers: byte-level (256 byte values plus <|endoftext|>, for tests and tiny runs) and
// GPT-2 BPE (ids identical to tiktoken's "gpt2" encoding).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace quartet {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::string name() const = 0;
  virtual std::int64_t vocab_size() const = 0;
  virtual std::int32_t eot() const = 0;  // <|endoftext|>, which precedes every document
  virtual std::vector<std::int32_t> encode(std::string_view text) const = 0;
  // Bytes of the tokens (<|endoftext|> decodes to nothing); ids outside the vocabulary throw.
  virtual std::string decode(std::span<const std::int32_t> ids) const = 0;
  // Bytes one token stands for (0 for <|endoftext|>): bits per byte divides by their sum.
  virtual std::int64_t token_bytes(std::int32_t id) const = 0;
  // The BPE merges as (left id, right id) pairs, first applied first; none for the byte
  // tokenizer. With decode() of every id they describe the tokenizer completely, which is what
  // the Hugging Face export writes out (data/hf_tokenizer_files.h).
  virtual std::vector<std::pair<std::int32_t, std::int32_t>> merges() const { return {}; }
};

// Byte-level: token b is byte b (0..255), <|endoftext|> is 256, vocabulary 257.
std::unique_ptr<Tokenizer> make_byte_tokenizer();

// GPT-2 BPE from encoder.json and vocab.bpe in `folder` (data/tokenizers/gpt2 by default).
std::unique_ptr<Tokenizer> make_gpt2_tokenizer(const std::string& folder);

// "byte" or "gpt2" (GPT-2 files from the default folder); throws Error for other names.
std::unique_ptr<Tokenizer> make_tokenizer(const std::string& name);

}  // namespace quartet

// A tokenizer as the files Hugging Face's `tokenizers` and `transformers` load
// (AutoTokenizer.from_pretrained): tokenizer.json, tokenizer_config.json and
// special_tokens_map.json, giving the same ids as ours for any text (docs/hf-export.md).
#pragma once

#include <cstdint>
#include <string>

#include "quartet/data/tokenizer.h"

namespace quartet {

// The contents of the three files (JSON text, each ending in a newline).
struct HfTokenizerFiles {
  std::string tokenizer_json;
  std::string tokenizer_config_json;
  std::string special_tokens_map_json;
};

// Both our tokenizers are byte-level BPE (the byte tokenizer is the case without merges), so
// one description serves both: a BPE model over GPT-2's printable stand-ins for bytes, GPT-2's
// ByteLevel pre-tokenizer and decoder, <|endoftext|> as the special token that every encoded
// text starts with (as every document does in training). `max_seq_len` is the model's context,
// written as model_max_length. Throws Error if the vocabulary cannot be written (two ids for
// the same bytes, an empty token other than <|endoftext|>, a merge of ids it does not have).
HfTokenizerFiles hf_tokenizer_files(const Tokenizer& tokenizer, std::int64_t max_seq_len);

}  // namespace quartet

// Checks on the text files `quartet prepare` tokenizes, made before anything is written: a
// binary file (a model checkpoint, an image, a .bin passed by mistake) would otherwise become
// shards of noise without a word, and an empty or repeated input silently changes the data.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace quartet {

// Share of a file's bytes that may be invalid UTF-8 before it counts as binary. Text in a
// legacy encoding (Latin-1: a few percent of its bytes) stays under it and gets a warning;
// compressed or binary data (about half of its bytes) is far above.
inline constexpr double kMaxInvalidUtf8Share = 0.10;

struct TextInput {
  std::string name;      // the path, for messages
  std::string_view text;  // its contents (decompressed)
};

// Why `text` looks binary (a NUL byte and where; or more than kMaxInvalidUtf8Share of its bytes
// invalid UTF-8), or empty when it reads as text.
std::string binary_evidence(std::string_view text);

// Throws Error for a binary input, naming it and what gives it away: a NUL byte (and where),
// or more than kMaxInvalidUtf8Share of its bytes invalid UTF-8. Returns warnings, one line
// each: an empty input (it adds no document), an input given twice (same path, or identical
// contents under another name), some invalid UTF-8 (the GPT-2 tokenizer replaces it by U+FFFD).
std::vector<std::string> check_text_inputs(const std::vector<TextInput>& inputs);

}  // namespace quartet

#include "quartet/data/text_input.h"

#include <fmt/format.h>

#include <filesystem>
#include <unordered_map>

#include "quartet/error.h"
#include "quartet/util/text.h"

namespace quartet {

namespace {

// Bytes of `text` that are not part of valid UTF-8 (each becomes one U+FFFD when sanitized),
// and the offset of the first.
struct InvalidUtf8 {
  std::size_t bytes = 0;
  std::size_t first = 0;
};

InvalidUtf8 count_invalid_utf8(std::string_view text) {
  // sanitize_utf8 is the definition of valid used by the tokenizer; compare piece by piece so
  // the count is exact without a second decoder here.
  InvalidUtf8 r;
  constexpr std::size_t kChunk = 1 << 16;
  std::size_t at = 0;
  while (at < text.size()) {
    // Never cut a sequence: extend the chunk to the next byte that starts one (or the end).
    std::size_t end = std::min(text.size(), at + kChunk);
    while (end < text.size() && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80 && end < at + kChunk + 4) ++end;
    const std::string_view piece = text.substr(at, end - at);
    const std::string clean = sanitize_utf8(piece);
    if (clean.size() != piece.size() || clean != piece) {
      // Walk both: a valid sequence is copied, an invalid byte becomes 3 bytes of U+FFFD.
      std::size_t i = 0, j = 0;
      while (i < piece.size()) {
        if (clean.compare(j, 3, "\xEF\xBF\xBD") == 0 && piece.compare(i, 3, "\xEF\xBF\xBD") != 0) {
          if (r.bytes++ == 0) r.first = at + i;
          ++i;
          j += 3;
        } else {
          ++i;
          ++j;
        }
      }
    }
    at = end;
  }
  return r;
}

// binary_evidence for a text whose invalid UTF-8 is already counted.
std::string binary_evidence(std::string_view text, const InvalidUtf8& bad) {
  const std::size_t nul = text.find('\0');
  if (nul != std::string_view::npos) return fmt::format("it holds a NUL byte at offset {}", nul);
  const double share = text.empty() ? 0.0 : static_cast<double>(bad.bytes) / static_cast<double>(text.size());
  if (share > kMaxInvalidUtf8Share) {
    return fmt::format("{} of its {} bytes ({:.1f}%, more than {:.0f}%) are not valid UTF-8, the first at offset {}",
                       bad.bytes, text.size(), 100 * share, 100 * kMaxInvalidUtf8Share, bad.first);
  }
  return {};
}

}  // namespace

std::string binary_evidence(std::string_view text) { return binary_evidence(text, count_invalid_utf8(text)); }

std::vector<std::string> check_text_inputs(const std::vector<TextInput>& inputs) {
  std::vector<std::string> warnings;
  std::unordered_map<std::string, std::string> seen_paths;              // normalised path -> name
  std::unordered_map<std::size_t, std::vector<std::size_t>> by_hash;  // contents hash -> inputs
  for (std::size_t k = 0; k < inputs.size(); ++k) {
    const TextInput& in = inputs[k];
    const InvalidUtf8 bad = count_invalid_utf8(in.text);
    const std::string evidence = binary_evidence(in.text, bad);
    if (!evidence.empty()) {
      throw Error(fmt::format("{} looks binary, not text: {}; prepare takes text files (plain or .gz)", in.name,
                              evidence));
    }
    if (bad.bytes > 0) {
      warnings.push_back(fmt::format("{}: {} bytes are not valid UTF-8 (the first at offset {}); the gpt2 tokenizer "
                                     "reads each as U+FFFD (convert the file to UTF-8 to keep them)",
                                     in.name, bad.bytes, bad.first));
    }
    if (in.text.empty()) warnings.push_back(fmt::format("{} is empty: it adds no document", in.name));
    std::error_code ec;
    // The same file under two spellings (./a.txt, a.txt, a link) is the same input.
    const std::filesystem::path absolute = std::filesystem::absolute(in.name, ec).lexically_normal();
    std::filesystem::path normal = std::filesystem::weakly_canonical(absolute, ec);
    if (ec) normal = absolute;
    const auto [it, fresh] = seen_paths.emplace(normal.string(), in.name);
    if (!fresh) {
      warnings.push_back(fmt::format("{} is given more than once (as {} before): its text is used twice", in.name,
                                     it->second));
      continue;
    }
    if (in.text.empty()) continue;
    auto& same_hash = by_hash[std::hash<std::string_view>()(in.text)];
    for (std::size_t other : same_hash) {
      if (inputs[other].text == in.text) {
        warnings.push_back(fmt::format("{} has the same contents as {}: its text is used twice", in.name,
                                       inputs[other].name));
        break;
      }
    }
    same_hash.push_back(k);
  }
  return warnings;
}

}  // namespace quartet

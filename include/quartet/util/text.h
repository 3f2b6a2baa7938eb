#pragma once

#include <string>
#include <string_view>

namespace quartet {

// The text with every invalid UTF-8 sequence (bad bytes, overlong forms, surrogates, values
// past U+10FFFF) replaced by U+FFFD, as Python's errors="replace" does.
std::string sanitize_utf8(std::string_view text);

}  // namespace quartet

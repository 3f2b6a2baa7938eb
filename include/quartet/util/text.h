#pragma once

#include <string>
#include <string_view>

namespace quartet {

// The text with every invalid UTF-8 sequence (bad bytes, overlong forms, surrogates, values
// past U+10FFFF) replaced by U+FFFD, as Python's errors="replace" does.
std::string sanitize_utf8(std::string_view text);

// `text` as a gnuplot string literal: in single quotes, each single quote doubled (gnuplot's
// only escape there) and control characters (line breaks) made spaces, so no text can end the
// literal or the command and be read as gnuplot commands.
std::string gnuplot_quoted(std::string_view text);

}  // namespace quartet

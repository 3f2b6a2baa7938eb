#pragma once

#include <cstddef>

namespace quartet::detail {

struct EmbeddedEntry {
  const char* path;
  const char* begin;
  const char* end;
};

extern const EmbeddedEntry kEmbeddedFiles[];
extern const std::size_t kEmbeddedFileCount;

}  // namespace quartet::detail

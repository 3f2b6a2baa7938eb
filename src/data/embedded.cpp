#include "quartet/data/embedded.h"

#include "data/embedded_table.h"

namespace quartet {

std::optional<std::string_view> embedded_file(std::string_view path) {
  for (std::size_t i = 0; i < detail::kEmbeddedFileCount; ++i) {
    const detail::EmbeddedEntry& e = detail::kEmbeddedFiles[i];
    if (path == e.path) return std::string_view(e.begin, static_cast<std::size_t>(e.end - e.begin));
  }
  return std::nullopt;
}

std::vector<std::string> embedded_files(std::string_view prefix) {
  std::vector<std::string> out;
  for (std::size_t i = 0; i < detail::kEmbeddedFileCount; ++i) {
    const std::string_view p = detail::kEmbeddedFiles[i].path;
    if (p.substr(0, prefix.size()) == prefix) out.emplace_back(p);
  }
  return out;
}

}  // namespace quartet

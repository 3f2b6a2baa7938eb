// Files compiled into the program (the default corpus and the GPT-2 vocabulary), so the main
// job runs from any folder with no download. Paths are relative to data/.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace quartet {

std::optional<std::string_view> embedded_file(std::string_view path);
std::vector<std::string> embedded_files(std::string_view prefix);

}  // namespace quartet

// --keep-last: removing old checkpoints after a save (checkpoint.h).
#include <algorithm>
#include <charconv>
#include <regex>
#include <string>
#include <utility>
#include <vector>

#include "quartet/train/checkpoint.h"
#include "quartet/util/files.h"

namespace quartet {

namespace {

// The folder `latest` names, or "" when there is none (then nothing is removed: the one to keep
// is unknown).
std::string latest_name(const std::filesystem::path& root) {
  const std::filesystem::path file = root / "latest";
  if (!std::filesystem::is_regular_file(std::filesystem::symlink_status(file))) return {};
  std::string name = read_file(file);
  while (!name.empty() && (name.back() == '\n' || name.back() == '\r' || name.back() == ' ')) name.pop_back();
  return name;
}

}  // namespace

std::vector<std::pair<std::uint64_t, std::filesystem::path>> checkpoint_folders(const std::filesystem::path& run_dir) {
  std::vector<std::pair<std::uint64_t, std::filesystem::path>> found;
  const std::filesystem::path root = run_dir / "checkpoints";
  if (!std::filesystem::is_directory(std::filesystem::symlink_status(root))) return found;
  static const std::regex checkpoint_name(R"(step-([0-9]+))");
  for (const auto& e : std::filesystem::directory_iterator(root)) {
    const std::string name = e.path().filename().string();
    std::smatch m;
    if (!std::regex_match(name, m, checkpoint_name) || !e.is_directory() || e.is_symlink()) continue;
    std::uint64_t step = 0;
    const std::string digits = m[1];
    const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), step);
    if (ec != std::errc() || end != digits.data() + digits.size()) continue;  // not a step this code wrote
    found.emplace_back(step, e.path());
  }
  std::sort(found.begin(), found.end());
  return found;
}

std::vector<std::filesystem::path> prune_checkpoints(const std::filesystem::path& run_dir, std::int64_t keep) {
  std::vector<std::filesystem::path> removed;
  const std::filesystem::path root = run_dir / "checkpoints";
  if (keep <= 0 || !std::filesystem::is_directory(std::filesystem::symlink_status(root))) return removed;
  const std::string latest = latest_name(root);
  if (latest.empty()) return removed;
  std::vector<std::pair<std::uint64_t, std::filesystem::path>> found = checkpoint_folders(run_dir);
  // Most recent = highest step (the folder names say it; file times can be changed by a copy).
  std::sort(found.begin(), found.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  for (std::size_t i = static_cast<std::size_t>(std::min<std::int64_t>(keep, static_cast<std::int64_t>(found.size())));
       i < found.size(); ++i) {
    if (found[i].second.filename() == latest) continue;
    std::filesystem::remove_all(found[i].second);
    removed.push_back(found[i].second);
  }
  return removed;
}

}  // namespace quartet

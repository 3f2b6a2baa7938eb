#include "cli/config_file.h"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>

#include "cli/option_checks.h"
#include "quartet/error.h"

namespace quartet::cli {

namespace {

// Keys are option names; '_' and '-' are the same character, so the spelling of state.json
// (final_eval_batches) and of the command line (final-eval-batches) both work.
std::string normalized_key(std::string key) {
  std::replace(key.begin(), key.end(), '_', '-');
  return key;
}

std::size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

// " (did you mean 'steps'?)" for a near miss among `candidates`, else "".
std::string suggestion(const std::string& wrong, const std::vector<std::string>& candidates) {
  std::string best;
  std::size_t best_distance = std::max<std::size_t>(2, wrong.size() / 3) + 1;
  for (const std::string& c : candidates) {
    const std::size_t d = edit_distance(wrong, c);
    if (d < best_distance) {
      best = c;
      best_distance = d;
    }
  }
  return best.empty() ? "" : fmt::format(" (did you mean '{}'?)", best);
}

std::vector<std::string> config_keys(const CLI::App& command) {
  std::vector<std::string> keys;
  for (const CLI::Option* option : command.get_options()) {
    const std::string name = option->get_name();
    if (name.rfind("--", 0) != 0 || name == "--help" || name == "--config") continue;
    keys.push_back(name.substr(2));
  }
  return keys;
}

// The file's items as arguments of `command`, every key and value checked.
std::vector<std::string> config_arguments(CLI::App& app, CLI::App& command, const std::string& file) {
  std::ifstream in(file);
  if (!in) throw Error(fmt::format("--config {}: cannot open the file ({})", file, std::strerror(errno)));
  std::vector<CLI::ConfigItem> items;
  try {
    items = CLI::ConfigTOML().from_config(in);
  } catch (const CLI::Error& e) {
    throw Error(fmt::format("--config {}: not a valid TOML file ({})", file, e.what()));
  }
  std::vector<std::string> sections;
  for (const CLI::App* sub : app.get_subcommands({})) sections.push_back(sub->get_name());
  const std::vector<std::string> keys = config_keys(command);

  std::vector<std::string> expanded;
  std::map<std::string, std::string> seen;  // normalized key -> as written
  for (const CLI::ConfigItem& item : items) {
    if (item.name == "++" || item.name == "--") continue;  // section markers
    const std::string where = fmt::format("--config {}: ", file);
    if (!item.parents.empty()) {
      const std::string section = fmt::format("{}", fmt::join(item.parents, "."));
      if (item.parents.size() > 1 || std::find(sections.begin(), sections.end(), section) == sections.end()) {
        throw Error(fmt::format("{}section [{}] is not a quartet command{}; sections are [<command>], one of: {}", where,
                                section, suggestion(section, sections), fmt::join(sections, ", ")));
      }
      // A [compare] section in a file that `train` reads belongs to compare: one file may serve both.
      if (section != command.get_name()) continue;
    }
    const std::string key = normalized_key(item.name);
    const std::string shown = item.parents.empty() ? item.name : fmt::format("[{}] {}", item.parents.front(), item.name);
    CLI::Option* option = key == "config" || key == "help" ? nullptr : command.get_option_no_throw("--" + key);
    if (option == nullptr) {
      throw Error(fmt::format("{}key '{}' is not an option of quartet {}{}", where, shown, command.get_name(),
                              suggestion(key, keys)));
    }
    if (const auto earlier = seen.find(key); earlier != seen.end()) {
      throw Error(fmt::format("{}key '{}' is given twice (also as '{}'); keep one", where, shown, earlier->second));
    }
    seen.emplace(key, shown);
    if (option->get_expected_min() == 0) {  // a flag: true / false
      if (item.inputs.size() != 1 || (item.inputs[0] != "true" && item.inputs[0] != "false")) {
        throw Error(fmt::format("{}key '{}' is a flag: expected true or false, got {}", where, shown,
                                fmt::join(item.inputs, ", ")));
      }
      if (item.inputs[0] == "true") expanded.push_back("--" + key);
      continue;
    }
    if (item.inputs.size() != 1) {
      throw Error(fmt::format("{}key '{}' takes one value, got {} ({})", where, shown, item.inputs.size(),
                              fmt::join(item.inputs, ", ")));
    }
    if (const std::string complaint = check_option_value(*option, item.inputs[0]); !complaint.empty()) {
      throw Error(fmt::format("{}key '{}': {}", where, shown, complaint));
    }
    // One "--key=value" argument: a value that starts with '-' stays a value.
    expanded.push_back(fmt::format("--{}={}", key, item.inputs[0]));
  }
  return expanded;
}

}  // namespace

void add_config_option(CLI::App& command, std::string& path) {
  command.add_option("--config", path,
                     "read options from a TOML file (key = value, keys are option names without dashes, '-' or "
                     "'_'); flags on the command line override it; one file per run");
}

std::vector<std::string> expand_config_files(CLI::App& app, std::vector<std::string> args) {
  if (args.empty() || args[0].empty() || args[0][0] == '-') return args;
  CLI::App* command = nullptr;
  for (CLI::App* sub : app.get_subcommands({})) {
    if (sub->get_name() == args[0]) command = sub;
  }
  if (command == nullptr || command->get_option_no_throw("--config") == nullptr) return args;
  std::string file;
  std::size_t at = 0, consumed = 0;
  for (std::size_t i = 1; i < args.size(); ++i) {
    if (args[i] == "--") break;  // what follows is positional
    std::string this_file;
    std::size_t this_consumed = 0;
    if (args[i] == "--config" && i + 1 < args.size()) {
      this_file = args[i + 1];
      this_consumed = 2;
    } else if (args[i].rfind("--config=", 0) == 0) {
      this_file = args[i].substr(9);
      this_consumed = 1;
    } else {
      continue;
    }
    // Merging two files would need rules for conflicts; one file keeps the run's settings in one place.
    if (consumed != 0) {
      throw Error(fmt::format("--config is given twice ({} and {}); put the settings in one file", file, this_file));
    }
    file = this_file;
    at = i;
    consumed = this_consumed;
    i += this_consumed - 1;
  }
  if (consumed == 0) return args;
  const std::vector<std::string> expanded = config_arguments(app, *command, file);
  args.erase(args.begin() + static_cast<std::ptrdiff_t>(at), args.begin() + static_cast<std::ptrdiff_t>(at + consumed));
  args.insert(args.begin() + 1, expanded.begin(), expanded.end());
  return args;
}

}  // namespace quartet::cli

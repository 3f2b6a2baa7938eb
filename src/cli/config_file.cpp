#include "cli/config_file.h"

#include <fmt/format.h>

#include <fstream>

#include "quartet/error.h"

namespace quartet::cli {

void add_config_option(CLI::App& command, std::string& path) {
  command.add_option("--config", path,
                     "read options from a TOML file (key = value, keys are option names without dashes); "
                     "flags on the command line override it");
}

std::vector<std::string> expand_config_files(CLI::App& app, std::vector<std::string> args) {
  if (args.empty() || args[0].empty() || args[0][0] == '-') return args;
  CLI::App* command = nullptr;
  for (CLI::App* sub : app.get_subcommands({})) {
    if (sub->get_name() == args[0]) command = sub;
  }
  if (command == nullptr) return args;
  for (std::size_t i = 1; i < args.size(); ++i) {
    std::string file;
    std::size_t consumed = 0;
    if (args[i] == "--config" && i + 1 < args.size()) {
      file = args[i + 1];
      consumed = 2;
    } else if (args[i].rfind("--config=", 0) == 0) {
      file = args[i].substr(9);
      consumed = 1;
    } else {
      continue;
    }
    std::ifstream in(file);
    if (!in) throw Error(fmt::format("--config {}: cannot open the file", file));
    std::vector<CLI::ConfigItem> items;
    try {
      items = CLI::ConfigTOML().from_config(in);
    } catch (const CLI::Error& e) {
      throw Error(fmt::format("--config {}: not a valid TOML file ({})", file, e.what()));
    }
    std::vector<std::string> expanded;
    for (const CLI::ConfigItem& item : items) {
      if (item.name == "++" || item.name == "--") continue;  // section markers
      if (!item.parents.empty() && item.parents.front() != command->get_name()) continue;
      const CLI::Option* option = command->get_option_no_throw("--" + item.name);
      if (option == nullptr || item.name == "config") {
        throw Error(fmt::format("--config {}: '{}' is not an option of quartet {}", file, item.name, command->get_name()));
      }
      if (option->get_expected_min() == 0) {  // a flag: true / false
        if (item.inputs.size() != 1 || (item.inputs[0] != "true" && item.inputs[0] != "false")) {
          throw Error(fmt::format("--config {}: '{}' is a flag and takes true or false", file, item.name));
        }
        if (item.inputs[0] == "true") expanded.push_back("--" + item.name);
        continue;
      }
      expanded.push_back("--" + item.name);
      expanded.insert(expanded.end(), item.inputs.begin(), item.inputs.end());
    }
    args.erase(args.begin() + static_cast<std::ptrdiff_t>(i), args.begin() + static_cast<std::ptrdiff_t>(i + consumed));
    args.insert(args.begin() + 1, expanded.begin(), expanded.end());
    break;
  }
  return args;
}

}  // namespace quartet::cli

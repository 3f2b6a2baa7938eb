#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <exception>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/config_file.h"
#include "quartet/error.h"

int main(int argc, char** argv) {
  CLI::App app{"Quartet: pre-training LLMs with every large matrix product in 4-bit floating point"};
  app.set_version_flag("--version", "quartet 0.1.0");
  app.require_subcommand(1);

  std::vector<quartet::cli::Command> commands;
  commands.push_back(quartet::cli::add_train_command(app));
  commands.push_back(quartet::cli::add_compare_command(app));
  commands.push_back(quartet::cli::add_sample_command(app));
  commands.push_back(quartet::cli::add_prepare_command(app));
  commands.push_back(quartet::cli::add_export_command(app));
  commands.push_back(quartet::cli::add_bench_command(app));
  commands.push_back(quartet::cli::add_quant_error_command(app));

  // CLI11 reports an unknown command only as "a subcommand is required"; name it instead.
  if (argc > 1 && argv[1][0] != '-') {
    std::string known;
    bool found = false;
    for (const CLI::App* sub : app.get_subcommands({})) {
      found |= sub->get_name() == argv[1];
      known += (known.empty() ? "" : ", ") + sub->get_name();
    }
    if (!found) {
      fmt::print(stderr, "quartet: unknown command '{}'; expected one of: {} (see quartet --help)\n", argv[1], known);
      return 2;
    }
  }
  try {
    std::vector<std::string> args(argv + 1, argv + argc);
    args = quartet::cli::expand_config_files(app, std::move(args));
    std::reverse(args.begin(), args.end());  // CLI11 takes the arguments in reverse order
    app.parse(args);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const quartet::Error& e) {
    fmt::print(stderr, "quartet: error: {}\n", e.what());
    return 2;
  }
  try {
    for (const auto& command : commands) {
      if (command.app->parsed()) return command.run();
    }
  } catch (const quartet::Error& e) {
    fmt::print(stderr, "quartet: error: {}\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    fmt::print(stderr, "quartet: error: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "quartet: internal error: {}\n", e.what());
    return 2;
  }
  return 1;
}

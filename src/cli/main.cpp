#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <exception>
#include <filesystem>
#include <new>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/config_file.h"
#include "cli/exit_codes.h"
#include "quartet/util/heap_tuning.h"
#include "quartet/backend/cuda.h"
#include "quartet/error.h"

namespace {

using namespace quartet::cli;

// "cannot create directories: /x/y: Permission denied" from what() = "filesystem error: cannot
// create directories: Permission denied [/x/y]": the operation, the path and the reason, without
// the library's framing (which reads like a crash).
std::string describe(const std::filesystem::filesystem_error& e) {
  std::string operation = e.what();
  const std::string prefix = "filesystem error: ";
  if (operation.rfind(prefix, 0) == 0) operation.erase(0, prefix.size());
  const std::string reason = e.code().message();
  const std::size_t at = operation.find(": " + reason);
  if (at != std::string::npos) operation.erase(at);
  std::string paths = e.path1().string();
  if (!e.path2().empty()) paths += fmt::format(" -> {}", e.path2().string());
  return fmt::format("{}: {}: {}", operation, paths.empty() ? "(no path)" : paths, reason);
}

// Runs `body`, turning each kind of failure into its message and exit code (docs/hardening-cli.md).
template <class Body>
int report_errors(const std::string& who, int error_code, Body&& body) {
  try {
    return body();
  } catch (const quartet::Error& e) {
    fmt::print(stderr, "{}: error: {}\n", who, e.what());
    return error_code;
  } catch (const std::filesystem::filesystem_error& e) {
    fmt::print(stderr, "{}: error: {}\n", who, describe(e));
    return kExitRuntimeError;
  } catch (const std::bad_alloc&) {
    fmt::print(stderr,
               "{}: error: out of host memory; use fewer tokens at once or a smaller model (train: lower --batch "
               "or --seq, or choose a smaller --model; prepare: fewer or smaller inputs at once)\n",
               who);
    return kExitRuntimeError;
  } catch (const std::exception& e) {
    fmt::print(stderr, "{}: internal error (a bug; please report it): {}\n", who, e.what());
    return kExitInternalError;
  }
}

}  // namespace

int main(int argc, char** argv) {
  quartet::keep_freed_heap_memory();
  CLI::App app{"Quartet: pre-training LLMs with every large matrix product in 4-bit floating point"};
  // The build's backends are part of the version: tests and bug reports need to know them.
  app.set_version_flag("--version", fmt::format("quartet 0.1.0 ({})", quartet::cuda_built()
                                                                         ? "with the CUDA backend"
                                                                         : "CPU only: built without the CUDA backend"));
  app.require_subcommand(1);
  // Unknown arguments are collected (subcommands inherit this) and reported below in the order
  // given; CLI11's own ExtrasError lists them in reverse.
  app.allow_extras();

  std::vector<Command> commands;
  commands.push_back(add_train_command(app));
  commands.push_back(add_compare_command(app));
  commands.push_back(add_plot_command(app));
  commands.push_back(add_sample_command(app));
  commands.push_back(add_eval_command(app));
  commands.push_back(add_prepare_command(app));
  commands.push_back(add_export_command(app));
  commands.push_back(add_bench_command(app));
  commands.push_back(add_quant_error_command(app));
  commands.push_back(add_diagnose_command(app));

  // CLI11 reports an unknown command only as "a subcommand is required"; name it instead.
  if (argc > 1 && argv[1][0] != '-') {
    std::string known;
    bool found = false;
    for (const CLI::App* sub : app.get_subcommands({})) {
      found |= sub->get_name() == argv[1];
      known += (known.empty() ? "" : ", ") + sub->get_name();
    }
    if (!found) {
      fmt::print(stderr, "quartet: error: unknown command '{}'; expected one of: {} (see quartet --help)\n", argv[1],
                 known);
      return kExitUsageError;
    }
  }
  const std::string who = argc > 1 && argv[1][0] != '-' ? fmt::format("quartet {}", argv[1]) : "quartet";

  // Usage: the command line and any config file, checked before any work starts.
  const Command* chosen = nullptr;
  const int usage = report_errors(who, kExitUsageError, [&]() {
    std::vector<std::string> args(argv + 1, argv + argc);
    args = expand_config_files(app, std::move(args));
    std::reverse(args.begin(), args.end());  // CLI11 takes the arguments in reverse order
    const auto unknown_arguments = [&]() {
      const std::vector<std::string> extras = app.remaining(true);
      if (extras.empty()) return false;
      fmt::print(stderr, "{}: error: unknown argument{} {} (see {} --help)\n", who, extras.size() > 1 ? "s" : "",
                 fmt::join(extras, " "), who);
      return true;
    };
    try {
      app.parse(args);
    } catch (const CLI::ParseError& e) {
      if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
      // "quartet --bogus" fails as "a subcommand is required"; the unknown argument is the news.
      if (!unknown_arguments()) fmt::print(stderr, "{}: error: {} (see {} --help)\n", who, e.what(), who);
      return kExitUsageError;
    }
    if (unknown_arguments()) return kExitUsageError;
    for (const Command& command : commands) {
      if (command.app->parsed()) chosen = &command;
    }
    if (chosen != nullptr && chosen->check) chosen->check();
    return kExitOk;
  });
  if (usage != kExitOk || chosen == nullptr) return usage;

  return report_errors(who, kExitRuntimeError, [&]() { return chosen->run(); });
}

// libFuzzer target: `--config FILE` (TOML through CLI11, cli/config_file.cpp) for a command with
// an option, a flag and a vector option. Only quartet::Error may come out.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "cli/config_file.h"
#include "quartet/error.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const std::string path = [] {
    std::atexit([] { std::filesystem::remove(std::filesystem::temp_directory_path() /
                                             ("quartet-fuzz-" + std::to_string(::getpid()) + ".toml")); });
    return (std::filesystem::temp_directory_path() / ("quartet-fuzz-" + std::to_string(::getpid()) + ".toml")).string();
  }();
  {
    std::ofstream(path, std::ios::binary | std::ios::trunc).write(reinterpret_cast<const char*>(data),
                                                                  static_cast<std::streamsize>(size));
  }
  CLI::App app("fuzz");
  CLI::App* train = app.add_subcommand("train");
  std::string config, recipe;
  int steps = 0;
  bool quiet = false;
  std::vector<std::string> inputs;
  quartet::cli::add_config_option(*train, config);
  train->add_option("--steps", steps);
  train->add_option("--recipe", recipe);
  train->add_option("--inputs", inputs);
  train->add_flag("--quiet", quiet);
  try {
    const std::vector<std::string> args = quartet::cli::expand_config_files(app, {"train", "--config", path, "--steps", "3"});
    std::vector<std::string> reversed(args.rbegin(), args.rend());
    try {
      app.parse(reversed);
    } catch (const CLI::Error&) {  // the values' own checks, as on a command line
    }
  } catch (const quartet::Error&) {
  }
  return 0;
}

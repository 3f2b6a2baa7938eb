// Running another program without a shell: the arguments reach it as they are, so nothing in
// them (a path, a name from a config file) is ever interpreted as a command.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace quartet {

struct ProgramResult {
  int exit_code = 0;   // the program's status; 127 when it could not be started
  std::string output;  // what it wrote to standard output (and standard error when merged)
};

// Runs argv[0] (looked up on PATH) with argv[1..] in `working_dir` (this process's when empty).
// Standard error is captured with the output when merge_stderr, else left to this process's.
ProgramResult run_program(const std::vector<std::string>& argv, const std::filesystem::path& working_dir = {},
                          bool merge_stderr = true);

}  // namespace quartet

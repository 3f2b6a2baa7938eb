// Drawing with gnuplot, shared by `quartet compare`, `quartet plot` and `quartet train`: the
// check that it is installed, its one "not installed" message, and running a script.
#pragma once

#include <filesystem>
#include <string>

namespace quartet::cli {

// How every command says that gnuplot is missing: one wording, so a user (and the tests) meet
// the same advice everywhere. Commands with --no-plot add "; install it or pass --no-plot".
inline constexpr const char* kGnuplotMissing = "gnuplot is not installed (Debian: apt-get install gnuplot-nox)";

// Whether `gnuplot --version` runs.
bool gnuplot_available();

// Runs `gnuplot <script_name>` inside `dir` (this process's folder when empty), without a shell,
// so the folder's name reaches chdir and gnuplot as it is. Throws Error with gnuplot's output if
// it fails.
void run_gnuplot(const std::filesystem::path& dir, const std::string& script_name);

}  // namespace quartet::cli

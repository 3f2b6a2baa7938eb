// Drawing with gnuplot, shared by `quartet compare`, `quartet plot` and `quartet train`: the
// check that it is installed, its one "not installed" message, and running a script.
#pragma once

#include <filesystem>
#include <string>

namespace quartet::cli {

// How every command says that gnuplot is missing: one wording, so a user (and the tests) meet
// the same advice everywhere. Commands with --no-plot add "; install it or pass --no-plot".
inline constexpr const char* kGnuplotMissing = "gnuplot is not installed (Debian: apt-get install gnuplot-nox)";

// The Okabe-Ito colours as linetypes 1-8 (distinct for the common colour blindnesses), for the
// scripts of every plot.
inline constexpr const char* kGnuplotLinetypes =
    "set linetype 1 lc rgb '#0072B2'\nset linetype 2 lc rgb '#D55E00'\nset linetype 3 lc rgb '#009E73'\n"
    "set linetype 4 lc rgb '#CC79A7'\nset linetype 5 lc rgb '#E69F00'\nset linetype 6 lc rgb '#56B4E9'\n"
    "set linetype 7 lc rgb '#000000'\nset linetype 8 lc rgb '#F0E442'\nset linetype cycle 8\n";

// Text for a gnuplot comment: a line break in a folder name would end the comment and make the
// rest of the name a command, so control characters become spaces.
std::string gnuplot_comment_text(std::string text);

// A number for a data block; gnuplot reads "NaN" as an undefined value (the curve has a gap).
std::string gnuplot_number(double v);

// A log-scaled y axis over the data's own range (yfix, plus a 5% margin) rather than whole
// decades, which would squeeze the curves into a strip; and back to a linear one.
inline constexpr const char* kGnuplotLogAxis =
    "set logscale y\nset autoscale yfix\nset offsets 0, 0, graph 0.05, graph 0.05\n";
inline constexpr const char* kGnuplotLinearAxis =
    "unset logscale y\nset autoscale y\nset offsets 0, 0, 0, 0\nset ytics autofreq\n";

// Tics for a log axis over [lo, hi] (the finite positive range of the data). gnuplot labels only
// whole decades, and a loss falling from 5.6 to 2.5 spans none: so the ticks are listed, as finely
// as leaves about a dozen of them.
std::string gnuplot_log_tics(double lo, double hi);

// Whether `gnuplot --version` runs.
bool gnuplot_available();

// Runs `gnuplot <script_name>` inside `dir` (this process's folder when empty), without a shell,
// so the folder's name reaches chdir and gnuplot as it is. Throws Error with gnuplot's output if
// it fails.
void run_gnuplot(const std::filesystem::path& dir, const std::string& script_name);

}  // namespace quartet::cli

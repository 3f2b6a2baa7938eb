#include "cli/gnuplot.h"

#include <fmt/format.h>

#include <cmath>
#include <vector>

#include "quartet/error.h"
#include "quartet/util/process.h"

namespace quartet::cli {

std::string gnuplot_comment_text(std::string text) {
  for (char& c : text) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = ' ';
  }
  return text;
}

std::string gnuplot_number(double v) { return std::isfinite(v) ? fmt::format("{}", v) : "NaN"; }

std::string gnuplot_log_tics(double lo, double hi) {
  if (!(lo > 0) || !(hi >= lo) || !std::isfinite(hi)) return "set ytics autofreq\n";
  const std::vector<std::vector<double>> mantissas = {{1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8}, {1, 2, 5}, {1}};
  std::vector<double> tics;
  for (const auto& m : mantissas) {
    tics.clear();
    for (int e = static_cast<int>(std::floor(std::log10(lo))); e <= static_cast<int>(std::ceil(std::log10(hi))); ++e) {
      for (double d : m) {
        const double t = d * std::pow(10.0, e);
        if (t >= lo && t <= hi) tics.push_back(t);
      }
    }
    if (tics.size() <= 12) break;
  }
  // Fewer than two tics in range (a flat curve): the nearest below and above label the axis.
  if (tics.size() < 2) return "set ytics autofreq\nset autoscale y\n";
  std::string list;
  for (double t : tics) list += fmt::format("{}{:g}", list.empty() ? "" : ", ", t);
  return fmt::format("set ytics ({})\n", list);
}

bool gnuplot_available() { return run_program({"gnuplot", "--version"}).exit_code == 0; }

void run_gnuplot(const std::filesystem::path& dir, const std::string& script_name) {
  const ProgramResult r = run_program({"gnuplot", script_name}, dir);
  if (r.exit_code != 0) {
    throw Error(fmt::format("gnuplot failed on {} (status {}): {}", (dir / script_name).string(), r.exit_code, r.output));
  }
}

}  // namespace quartet::cli

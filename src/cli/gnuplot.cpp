#include "cli/gnuplot.h"

#include <fmt/format.h>

#include "quartet/error.h"
#include "quartet/util/process.h"

namespace quartet::cli {

bool gnuplot_available() { return run_program({"gnuplot", "--version"}).exit_code == 0; }

void run_gnuplot(const std::filesystem::path& dir, const std::string& script_name) {
  const ProgramResult r = run_program({"gnuplot", script_name}, dir);
  if (r.exit_code != 0) {
    throw Error(fmt::format("gnuplot failed on {} (status {}): {}", (dir / script_name).string(), r.exit_code, r.output));
  }
}

}  // namespace quartet::cli

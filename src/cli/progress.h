// A progress line for long work: rewritten in place on a terminal, one line per update
// otherwise (so logs stay readable).
#pragma once

#include <chrono>
#include <string>

namespace quartet::cli {

class ProgressLine {
 public:
  explicit ProgressLine(std::string label);
  // done of total units finished; `what` describes the unit just finished. On a terminal the
  // line is rewritten in place; in a log a line is written every ~5% of the work, and
  // always when `keep` is set (e.g. after an evaluation).
  void update(long done, long total, const std::string& what, bool keep = false);
  void finish();

 private:
  std::string label_;
  std::chrono::steady_clock::time_point start_;
  bool tty_;
  bool open_ = false;
  long last_logged_ = -1;
};

std::string format_duration(double seconds);

}  // namespace quartet::cli

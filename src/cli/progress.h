// A progress line for long work: rewritten in place on a terminal, one line per update
// otherwise (so logs stay readable).
#pragma once

#include <chrono>
#include <string>

namespace quartet::cli {

class ProgressLine {
 public:
  explicit ProgressLine(std::string label);
  // done of total units finished; `what` describes the unit just finished.
  void update(long done, long total, const std::string& what);
  void finish();

 private:
  std::string label_;
  std::chrono::steady_clock::time_point start_;
  bool tty_;
  bool open_ = false;
};

std::string format_duration(double seconds);

}  // namespace quartet::cli

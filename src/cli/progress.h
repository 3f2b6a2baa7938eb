// A progress line for long work: rewritten in place on a terminal, one line per update
// otherwise (so logs stay readable).
#pragma once

#include <chrono>
#include <cstdio>
#include <functional>
#include <string>

namespace quartet::cli {

class ProgressLine {
 public:
  // Seconds since some fixed point; tests pass a fake clock.
  using Clock = std::function<double()>;

  explicit ProgressLine(std::string label, Clock clock = {}, std::FILE* out = stderr);

  // The work continues from `done` units finished earlier (a resumed run): the rate, and so the
  // ETA, counts only the units finished since this line started, not the earlier ones.
  void set_start(long done) { start_done_ = done; }
  // The ETA uses the rate since the first update, so that the time before the first unit
  // (loading data, building the model) does not count as work per unit; at the first update
  // it can only use the time since the line started.

  // done of total units finished; `what` describes the unit just finished. On a terminal the
  // line is rewritten in place; in a log a line is written every ~5% of the work, and
  // always when `keep` is set (e.g. after an evaluation). A silent line prints nothing but
  // still keeps the time, so a final report can quote the same elapsed time.
  void update(long done, long total, const std::string& what, bool keep = false);
  void finish();
  void set_silent(bool silent) { silent_ = silent; }

  // The elapsed time the last update reported (seconds since the line started).
  double last_elapsed() const { return last_elapsed_; }

 private:
  std::string label_;
  Clock clock_;
  std::FILE* out_;
  double start_;
  bool tty_;
  bool open_ = false;
  bool silent_ = false;
  long start_done_ = 0;
  long first_done_ = -1;  // units done at the first update (-1: no update yet)
  double first_time_ = 0;
  long last_logged_ = -1;
  double last_elapsed_ = 0;
};

std::string format_duration(double seconds);

// Seconds remaining at the rate since the line started: done - start_done units took `elapsed`.
double eta_seconds(double elapsed, long start_done, long done, long total);

}  // namespace quartet::cli

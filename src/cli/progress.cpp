#include "cli/progress.h"

#include <fmt/format.h>
#include <unistd.h>

namespace quartet::cli {

std::string format_duration(double seconds) {
  const long s = static_cast<long>(seconds + 0.5);
  if (s < 60) return fmt::format("{}s", s);
  if (s < 3600) return fmt::format("{}m{:02}s", s / 60, s % 60);
  return fmt::format("{}h{:02}m", s / 3600, (s % 3600) / 60);
}

double eta_seconds(double elapsed, long start_done, long done, long total) {
  const long finished_here = done - start_done;
  if (finished_here <= 0 || done >= total) return 0.0;
  return elapsed * static_cast<double>(total - done) / static_cast<double>(finished_here);
}

namespace {

double steady_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

ProgressLine::ProgressLine(std::string label, Clock clock, std::FILE* out)
    : label_(std::move(label)),
      clock_(clock ? std::move(clock) : Clock(steady_seconds)),
      out_(out),
      start_(clock_()),
      tty_(isatty(fileno(out)) != 0) {}

void ProgressLine::update(long done, long total, const std::string& what, bool keep) {
  const double now = clock_(), elapsed = now - start_;
  last_elapsed_ = elapsed;
  if (first_done_ < 0) {
    first_done_ = done;
    first_time_ = now;
  }
  const double eta = done > first_done_ ? eta_seconds(now - first_time_, first_done_, done, total)
                                        : eta_seconds(elapsed, start_done_, done, total);
  if (silent_) return;
  const std::string line = fmt::format("{} [{}/{}] {}  elapsed {}  eta {}", label_, done, total, what,
                                       format_duration(elapsed), format_duration(eta));
  if (tty_) {
    fmt::print(out_, "\r\033[K{}", line);
    open_ = true;
    if (keep) finish();
  } else if (keep || done == total || last_logged_ < 0 || (done - last_logged_) * 20 >= total) {
    fmt::print(out_, "{}\n", line);
    last_logged_ = done;
  }
  std::fflush(out_);
}

void ProgressLine::finish() {
  if (open_) fmt::print(out_, "\n");
  open_ = false;
}

}  // namespace quartet::cli

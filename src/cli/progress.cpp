#include "cli/progress.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>

namespace quartet::cli {

std::string format_duration(double seconds) {
  const long s = static_cast<long>(seconds + 0.5);
  if (s < 60) return fmt::format("{}s", s);
  if (s < 3600) return fmt::format("{}m{:02}s", s / 60, s % 60);
  return fmt::format("{}h{:02}m", s / 3600, (s % 3600) / 60);
}

ProgressLine::ProgressLine(std::string label)
    : label_(std::move(label)), start_(std::chrono::steady_clock::now()), tty_(isatty(fileno(stderr)) != 0) {}

void ProgressLine::update(long done, long total, const std::string& what, bool keep) {
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double eta = done > 0 ? elapsed * static_cast<double>(total - done) / static_cast<double>(done) : 0.0;
  const std::string line = fmt::format("{} [{}/{}] {}  elapsed {}  eta {}", label_, done, total, what,
                                       format_duration(elapsed), format_duration(eta));
  if (tty_) {
    fmt::print(stderr, "\r\033[K{}", line);
    open_ = true;
    if (keep) finish();
  } else if (keep || done == total || last_logged_ < 0 || (done - last_logged_) * 20 >= total) {
    fmt::print(stderr, "{}\n", line);
    last_logged_ = done;
  }
  std::fflush(stderr);
}

void ProgressLine::finish() {
  if (open_) fmt::print(stderr, "\n");
  open_ = false;
}

}  // namespace quartet::cli

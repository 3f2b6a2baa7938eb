// Ctrl-C (SIGINT) and SIGTERM during a training run: the first asks the run to stop after the
// step under way, save a checkpoint and return, so an interruption loses no completed step; a
// second one (either signal) kills the process at once, for when saving takes too long. Copies
// of the first that arrive within a second (launchers signal a process and its group at once)
// are the same request.
#pragma once

#include <atomic>

namespace quartet::cli {

class StopSignals {
 public:
  StopSignals();   // installs the handlers
  ~StopSignals();  // restores the previous ones
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

  // Set by the first signal; RunControl::stop.
  const std::atomic<bool>& requested() const;
  // The first signal received (SIGINT, SIGTERM), or 0.
  int signal_number() const;
  // The conventional exit status for it: 128 + the signal's number (130, 143).
  int exit_status() const { return 128 + signal_number(); }
};

}  // namespace quartet::cli

#include "cli/stop_signals.h"

#include <signal.h>
#include <unistd.h>

#include <cstring>

namespace quartet::cli {

namespace {

// Written only by the handler; std::atomic<bool> is lock-free, so async-signal-safe.
std::atomic<bool> g_requested{false};
volatile sig_atomic_t g_signal = 0;
struct sigaction g_old_int, g_old_term;

void on_stop_signal(int sig) {
  // The next SIGINT or SIGTERM gets the default action: the process dies at once.
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  ::sigaction(SIGINT, &dfl, nullptr);
  ::sigaction(SIGTERM, &dfl, nullptr);
  if (g_requested.exchange(true)) {
    // Two signals delivered together (to two threads, or one nested in the other's handler):
    // this is the second, so it aborts. It is blocked in its own handler, hence pending until
    // the handler returns, then fatal.
    ::raise(sig);
    return;
  }
  g_signal = sig;
  static const char message[] =
      "\nquartet: stopping after this step and saving a checkpoint (interrupt again to abort at once)\n";
  const ssize_t ignored = ::write(STDERR_FILENO, message, sizeof(message) - 1);
  (void)ignored;
}

}  // namespace

StopSignals::StopSignals() {
  g_requested.store(false);
  g_signal = 0;
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;  // file writes and reads in progress carry on
  ::sigaction(SIGINT, &sa, &g_old_int);
  ::sigaction(SIGTERM, &sa, &g_old_term);
}

StopSignals::~StopSignals() {
  ::sigaction(SIGINT, &g_old_int, nullptr);
  ::sigaction(SIGTERM, &g_old_term, nullptr);
}

const std::atomic<bool>& StopSignals::requested() const { return g_requested; }

int StopSignals::signal_number() const { return g_signal; }

}  // namespace quartet::cli

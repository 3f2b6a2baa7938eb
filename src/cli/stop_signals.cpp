#include "cli/stop_signals.h"

#include <signal.h>
#include <unistd.h>

#include <cstring>
#include <ctime>

namespace quartet::cli {

namespace {

// Written only by the handler; std::atomic<bool> is lock-free, so async-signal-safe.
std::atomic<bool> g_requested{false};
volatile sig_atomic_t g_signal = 0;
// When the first signal came (CLOCK_MONOTONIC, ns; 0: none yet). Two threads can run the handler
// at once (each signal to another thread), so the first is decided by one compare-exchange.
std::atomic<long long> g_first_ns{0};
static_assert(std::atomic<long long>::is_always_lock_free, "the signal handler needs a lock-free atomic");
struct sigaction g_old_int, g_old_term;

// Launchers often signal a process twice at once: `timeout` and `kill -- -PGID` reach it both
// directly and through its process group, and a batch system may signal every process of a job
// step. Such copies, arriving within this window, are one request; a signal after it is a
// person asking again, and aborts.
constexpr long long kSameRequestNs = 1'000'000'000;

long long monotonic_ns() {
  timespec t{};
  ::clock_gettime(CLOCK_MONOTONIC, &t);  // async-signal-safe
  return static_cast<long long>(t.tv_sec) * 1'000'000'000 + t.tv_nsec;
}

void write_stderr(const char* text, std::size_t size) {
  const ssize_t ignored = ::write(STDERR_FILENO, text, size);
  (void)ignored;
}

void on_stop_signal(int sig) {
  const long long now = monotonic_ns();
  long long first = 0;
  if (g_first_ns.compare_exchange_strong(first, now)) {
    g_signal = sig;
    g_requested.store(true);
    static const char message[] =
        "\nquartet: stopping after this step and saving a checkpoint (interrupt again to abort at once)\n";
    write_stderr(message, sizeof(message) - 1);
    return;
  }
  if (now - first < kSameRequestNs) {
    static const char message[] = "quartet: the stop signal came twice at once: taken as one request\n";
    write_stderr(message, sizeof(message) - 1);
    return;
  }
  // Asked again: the default action, which kills the process. The signal is blocked inside its
  // own handler, so it stays pending until the handler returns, then is fatal.
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  ::sigaction(SIGINT, &dfl, nullptr);
  ::sigaction(SIGTERM, &dfl, nullptr);
  ::raise(sig);
}

}  // namespace

StopSignals::StopSignals() {
  g_requested.store(false);
  g_signal = 0;
  g_first_ns.store(0);
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaddset(&sa.sa_mask, SIGINT);  // in one thread SIGINT and SIGTERM never nest
  sigaddset(&sa.sa_mask, SIGTERM);
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

#include "quartet/dist/launcher.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include <chrono>
#include <cstring>
#include <optional>

#include "dist/socket.h"
#include "quartet/error.h"

namespace quartet {

std::string describe_rank_exit(int rank, int wait_status) {
  if (WIFEXITED(wait_status)) return fmt::format("rank {} exited with status {}", rank, WEXITSTATUS(wait_status));
  if (WIFSIGNALED(wait_status)) {
    return fmt::format("rank {} was killed by signal {} ({})", rank, WTERMSIG(wait_status),
                       strsignal(WTERMSIG(wait_status)));
  }
  return fmt::format("rank {} ended with wait status {}", rank, wait_status);
}

namespace {

int exit_status_of(int wait_status) {
  if (WIFEXITED(wait_status)) return WEXITSTATUS(wait_status);
  if (WIFSIGNALED(wait_status)) return 128 + WTERMSIG(wait_status);
  return 1;
}

// Blocks the launcher's signals while it runs, so that it receives them with sigtimedwait
// rather than in a handler; restores the mask when done.
class BlockedSignals {
 public:
  BlockedSignals() {
    sigemptyset(&set_);
    for (int s : {SIGINT, SIGTERM, SIGHUP, SIGCHLD}) sigaddset(&set_, s);
    pthread_sigmask(SIG_BLOCK, &set_, &old_);
  }
  ~BlockedSignals() { pthread_sigmask(SIG_SETMASK, &old_, nullptr); }
  const sigset_t& set() const { return set_; }
  const sigset_t& old() const { return old_; }

 private:
  sigset_t set_{}, old_{};
};

}  // namespace

int launch_local(const LocalLaunch& launch) {
  if (launch.processes < 1) throw Error(fmt::format("the number of processes must be at least 1, got {}", launch.processes));
  const auto log = [&](const std::string& s) {
    if (launch.log) launch.log(s);
  };
  const std::string program = launch.program.empty() ? "/proc/self/exe" : launch.program;
  const int port = launch.master_port > 0 ? launch.master_port : dist::free_tcp_port(launch.master_addr);

  // Everything a child needs is prepared before fork(): after it, only exec-safe calls.
  std::vector<std::vector<std::string>> envs(static_cast<std::size_t>(launch.processes));
  std::vector<std::string> base;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry(*e);
    const std::string key = entry.substr(0, entry.find('='));
    static const char* const ours[] = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                                       "MASTER_PORT"};
    bool replaced = launch.extra_environment.count(key) > 0;
    for (const char* o : ours) replaced = replaced || key == o;
    if (!replaced) base.push_back(entry);
  }
  for (int r = 0; r < launch.processes; ++r) {
    auto& env = envs[static_cast<std::size_t>(r)];
    env = base;
    env.push_back(fmt::format("RANK={}", r));
    env.push_back(fmt::format("WORLD_SIZE={}", launch.processes));
    env.push_back(fmt::format("LOCAL_RANK={}", r));
    env.push_back(fmt::format("LOCAL_WORLD_SIZE={}", launch.processes));
    env.push_back(fmt::format("MASTER_ADDR={}", launch.master_addr));
    env.push_back(fmt::format("MASTER_PORT={}", port));
    for (const auto& [k, v] : launch.extra_environment) env.push_back(k + "=" + v);
  }
  std::vector<std::string> argv_strings;
  argv_strings.push_back(program);
  for (const std::string& a : launch.args) argv_strings.push_back(a);
  std::vector<char*> argv;
  for (std::string& a : argv_strings) argv.push_back(a.data());
  argv.push_back(nullptr);

  BlockedSignals blocked;
  const pid_t launcher = getpid();
  std::vector<pid_t> pids;
  std::vector<bool> running;
  pid_t group = 0;
  const auto signal_ranks = [&](int sig) {
    if (group > 0) ::kill(-group, sig);
  };
  for (int r = 0; r < launch.processes; ++r) {
    std::vector<char*> envp;
    for (std::string& e : envs[static_cast<std::size_t>(r)]) envp.push_back(e.data());
    envp.push_back(nullptr);
    const pid_t pid = ::fork();
    if (pid < 0) {
      const int err = errno;
      signal_ranks(SIGKILL);
      throw Error(fmt::format("cannot start rank {}: {}", r, std::strerror(err)));
    }
    if (pid == 0) {
      ::setpgid(0, group);  // the first rank founds the group (group 0: its own pid)
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (::getppid() != launcher) ::_exit(1);  // the launcher died before prctl took effect
      ::pthread_sigmask(SIG_SETMASK, &blocked.old(), nullptr);
      ::execve(program.c_str(), argv.data(), envp.data());
      const char message[] = "quartet: cannot start a rank: exec failed\n";
      const ssize_t ignored = ::write(STDERR_FILENO, message, sizeof(message) - 1);
      (void)ignored;
      ::_exit(127);
    }
    if (group == 0) group = pid;
    ::setpgid(pid, group);  // also here: whichever of parent and child runs first
    pids.push_back(pid);
    running.push_back(true);
  }

  int alive = launch.processes;
  std::optional<int> failure;           // the launcher's exit status after a rank failed
  std::optional<int> forwarded;         // the first signal passed on to the ranks
  bool kill_pending = false;  // SIGKILL at kill_at for ranks still running after a failure
  auto kill_at = std::chrono::steady_clock::now();
  while (alive > 0) {
    timespec tick{0, 200 * 1000 * 1000};
    siginfo_t info{};
    const int sig = ::sigtimedwait(&blocked.set(), &info, &tick);
    if (sig == SIGINT || sig == SIGTERM || sig == SIGHUP) {
      if (!forwarded) forwarded = sig;
      signal_ranks(sig);
    }
    // Reap every rank that ended (SIGCHLD may merge several exits, or arrive between ticks).
    for (;;) {
      int status = 0;
      const pid_t pid = ::waitpid(-group, &status, WNOHANG);
      if (pid <= 0) break;
      int r = 0;
      while (r < launch.processes && pids[static_cast<std::size_t>(r)] != pid) ++r;
      if (r == launch.processes || !running[static_cast<std::size_t>(r)]) continue;
      running[static_cast<std::size_t>(r)] = false;
      --alive;
      const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
      if (ok || failure) continue;
      // A rank stopping because of the signal passed on to it is not a failure of its own.
      if (forwarded && exit_status_of(status) == 128 + *forwarded) continue;
      failure = exit_status_of(status);
      if (alive > 0) {
        log(fmt::format("{}; stopping the other {} rank{}", describe_rank_exit(r, status), alive, alive == 1 ? "" : "s"));
        signal_ranks(SIGTERM);
        kill_pending = true;
        kill_at = std::chrono::steady_clock::now() +
                  std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                      std::chrono::duration<double>(launch.grace_seconds));
      } else {
        log(describe_rank_exit(r, status));
      }
    }
    if (alive > 0 && kill_pending && std::chrono::steady_clock::now() >= kill_at) {
      log(fmt::format("{} rank{} still running {} s after the failure: killing {}", alive, alive == 1 ? "" : "s",
                      launch.grace_seconds, alive == 1 ? "it" : "them"));
      signal_ranks(SIGKILL);
      kill_pending = false;
    }
  }
  if (failure) return *failure;
  if (forwarded) return 128 + *forwarded;
  return 0;
}

}  // namespace quartet

// Ranks of a multi-process run as forked processes of the test: each runs a function and
// reports what it returned (or the Error it threw) through a pipe. A watchdog kills every rank
// still running after a bound, so a test fails rather than hangs.
#pragma once

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "quartet/error.h"

namespace quartet::test {

struct RankOutcome {
  bool ok = false;
  std::string text;  // what the function returned, or the error message
  int wait_status = 0;
  double seconds = 0;  // from the start until this rank ended
};

inline std::vector<RankOutcome> run_ranks(int n, const std::function<std::string(int rank)>& body,
                                          double bound_seconds = 60) {
  std::vector<pid_t> pids;
  std::vector<int> fds;
  const auto start = std::chrono::steady_clock::now();
  for (int r = 0; r < n; ++r) {
    int p[2];
    if (::pipe(p) != 0) throw Error("pipe failed");
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::close(p[0]);
      std::string out;
      int code = 0;
      try {
        out = body(r);
      } catch (const std::exception& e) {
        out = e.what();
        code = 1;
      }
      std::size_t at = 0;
      while (at < out.size()) {
        const ssize_t w = ::write(p[1], out.data() + at, out.size() - at);
        if (w <= 0) break;
        at += static_cast<std::size_t>(w);
      }
      ::_exit(code);
    }
    ::close(p[1]);
    pids.push_back(pid);
    fds.push_back(p[0]);
  }
  std::vector<RankOutcome> out(static_cast<std::size_t>(n));
  std::vector<bool> done(static_cast<std::size_t>(n), false);
  int left = n;
  while (left > 0) {
    for (int r = 0; r < n; ++r) {
      if (done[static_cast<std::size_t>(r)]) continue;
      int status = 0;
      if (::waitpid(pids[static_cast<std::size_t>(r)], &status, WNOHANG) == pids[static_cast<std::size_t>(r)]) {
        done[static_cast<std::size_t>(r)] = true;
        --left;
        RankOutcome& o = out[static_cast<std::size_t>(r)];
        o.wait_status = status;
        o.ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
        o.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        char buf[4096];
        ssize_t got;
        while ((got = ::read(fds[static_cast<std::size_t>(r)], buf, sizeof(buf))) > 0) o.text.append(buf, got);
        ::close(fds[static_cast<std::size_t>(r)]);
      }
    }
    if (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() > bound_seconds) {
      for (int r = 0; r < n; ++r) {
        if (!done[static_cast<std::size_t>(r)]) ::kill(pids[static_cast<std::size_t>(r)], SIGKILL);
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return out;
}

}  // namespace quartet::test

// `quartet train --gpus N` / `--processes N`: starts N copies of a program on this machine, one
// per rank, with RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT
// set as torchrun would set them, and looks after them:
//  * SIGINT, SIGTERM and SIGHUP sent to the launcher are passed on to every rank (the ranks run
//    in a process group of their own, so a terminal's Ctrl-C reaches them once, through here);
//  * when a rank fails (exits non-zero or is killed), the others get SIGTERM, then SIGKILL after
//    a grace period, and the launcher exits with the failed rank's status, naming it;
//  * a rank whose launcher dies gets SIGTERM (no orphaned ranks).
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

namespace quartet {

struct LocalLaunch {
  std::string program;                  // the executable (default: this program, /proc/self/exe)
  std::vector<std::string> args;        // each rank's argv[1..]
  int processes = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 0;                  // 0: a free port on master_addr
  double grace_seconds = 15;            // after a failure, before the others are killed
  std::map<std::string, std::string> extra_environment;  // set in every rank (e.g. OMP_NUM_THREADS)
  std::function<void(const std::string&)> log;          // the launcher's own messages
};

// Runs the ranks to their end; returns the exit status for the launcher: 0 when every rank
// succeeded, else the first failed rank's (its exit status, or 128 + its signal), or 128 + the
// signal the launcher passed on when the ranks stopped because of it.
int launch_local(const LocalLaunch& launch);

// A message for the exit status `wait_status` of rank `rank` ("rank 2 exited with status 1",
// "rank 1 was killed by signal 9 (Killed)").
std::string describe_rank_exit(int rank, int wait_status);

}  // namespace quartet

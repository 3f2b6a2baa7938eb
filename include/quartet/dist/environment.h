// Where this process stands in a multi-process (data-parallel) run: its rank among the world of
// processes, its rank on this node (which GPU it drives) and where rank 0's rendezvous listens.
// Read from the variables torchrun sets and Slurm scripts export (docs/multi-gpu.md):
//   RANK, WORLD_SIZE, LOCAL_RANK (required together), LOCAL_WORLD_SIZE (optional),
//   MASTER_ADDR, MASTER_PORT (required when WORLD_SIZE > 1).
// `quartet train --gpus N` sets them for the processes it starts.
#pragma once

#include <functional>
#include <optional>
#include <string>

namespace quartet {

struct DistEnvironment {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  int local_world_size = 1;
  std::string master_addr;  // empty only when world_size == 1
  int master_port = 0;

  std::string endpoint() const;  // "host:port", as messages name it
};

// The variables' values through `get` (nullopt: unset). None of RANK, WORLD_SIZE, LOCAL_RANK
// set: nullopt (a plain single-process run). Otherwise every value is checked and an Error
// names the variable, its value and what was expected: a missing partner variable, a
// non-integer, RANK outside [0, WORLD_SIZE), LOCAL_RANK outside [0, LOCAL_WORLD_SIZE), a port
// outside 1..65535. WORLD_SIZE=1 is a valid one-process "distributed" run (the dist code path).
std::optional<DistEnvironment> read_dist_environment(
    const std::function<std::optional<std::string>(const std::string&)>& get);

// The same from this process's environment.
std::optional<DistEnvironment> dist_environment_from_process();

// How long a rank waits for the others (rendezvous, a collective, a peer's reply) before it
// gives up with an error: QUARTET_DIST_TIMEOUT seconds (a positive number) when set, else
// `fallback_seconds`. Throws Error on a bad value.
double dist_timeout_seconds(double fallback_seconds = 600);

}  // namespace quartet

// The rendezvous of a multi-process run over TCP: rank 0 listens at MASTER_ADDR:MASTER_PORT,
// every other rank connects (retrying while rank 0 is not up yet) and says who it is; when all
// have arrived, rank 0 welcomes them. A rank that does not arrive within the timeout, a rank
// number given twice or a different WORLD_SIZE make every rank stop with one message naming
// the ranks and the address; nobody waits forever. Afterwards the connections carry small
// blobs (NCCL's unique id, the run's settings for a consistency check) and, for CPU runs, the
// collectives themselves (dist/communicator.h).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "quartet/dist/environment.h"

namespace quartet {

namespace dist {
struct Star;
}

class Rendezvous {
 public:
  // Blocks until every rank has arrived (or throws Error after timeout_seconds).
  static std::unique_ptr<Rendezvous> connect(const DistEnvironment& env, double timeout_seconds);
  ~Rendezvous();
  Rendezvous(const Rendezvous&) = delete;
  Rendezvous& operator=(const Rendezvous&) = delete;

  int rank() const;
  int world_size() const;
  double timeout_seconds() const;

  // Rank 0's blob, on every rank (the others' argument is ignored).
  std::string broadcast(const std::string& blob);
  // Every rank's blob in rank order, on every rank.
  std::vector<std::string> all_gather(const std::string& blob);

  // The connections, for a communicator or a PeerWatch that takes them over (this object is
  // then empty and must not be used again).
  std::unique_ptr<dist::Star> release();

 private:
  explicit Rendezvous(std::unique_ptr<dist::Star> star);
  std::unique_ptr<dist::Star> star_;
};

}  // namespace quartet

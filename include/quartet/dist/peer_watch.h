// Watches the other ranks of a run over the rendezvous' connections from a thread of its own,
// for communicators whose collectives cannot notice a lost peer (NCCL: a rank blocked in a
// collective whose peer died waits forever). A connection that closes without the peer's "bye"
// (it failed, exited early or was killed) or rank 0's abort calls on_lost once, from the
// watching thread, with a message naming the rank; rank 0 first tells the other ranks why.
// finish() says "bye" to the peers: an orderly end that nobody takes for a failure.
#pragma once

#include <functional>
#include <memory>
#include <string>

namespace quartet {

class Rendezvous;

class PeerWatch {
 public:
  PeerWatch(std::unique_ptr<Rendezvous> rendezvous, std::function<void(const std::string&)> on_lost);
  ~PeerWatch();  // stops watching; without finish() the peers see this rank's connections close
  PeerWatch(const PeerWatch&) = delete;
  PeerWatch& operator=(const PeerWatch&) = delete;

  void finish();

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace quartet

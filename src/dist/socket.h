// Blocking TCP sockets with deadlines, for the rendezvous and the CPU communicator: every wait
// is a poll() bounded by a deadline, and a peer that closes its end is reported at once, so a
// rank never hangs on a peer that died or never came.
#pragma once

#include <chrono>
#include <cstddef>
#include <string>

#include "quartet/error.h"

namespace quartet::dist {

using Clock = std::chrono::steady_clock;
using Deadline = Clock::time_point;
Deadline deadline_after(double seconds);
double seconds_left(Deadline deadline);

// A peer closed its connection (it exited, failed or was killed) or the connection broke.
class PeerLost : public Error {
 public:
  using Error::Error;
};
// A peer did not answer before the deadline.
class PeerTimeout : public Error {
 public:
  using Error::Error;
};

class Socket {
 public:
  Socket() = default;
  explicit Socket(int fd) : fd_(fd) {}
  ~Socket();
  Socket(Socket&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  Socket& operator=(Socket&& o) noexcept;
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;

  int fd() const { return fd_; }
  bool open() const { return fd_ >= 0; }
  void close();

  // Sends or receives exactly `bytes`, waiting at most until `deadline`; `peer` names the other
  // end in errors ("rank 3"). PeerLost when the peer closed, PeerTimeout at the deadline.
  void send_all(const void* data, std::size_t bytes, Deadline deadline, const std::string& peer);
  void recv_all(void* data, std::size_t bytes, Deadline deadline, const std::string& peer);

 private:
  int fd_ = -1;
};

// A listening socket on addr:port (SO_REUSEADDR; port 0: any free port). Error names the
// address and the system's reason.
Socket listen_tcp(const std::string& addr, int port, int backlog);
// The port a listening socket is bound to.
int local_port(const Socket& listener);
// The next connection, or PeerTimeout at the deadline.
Socket accept_until(Socket& listener, Deadline deadline, const std::string& what);
// Connects to addr:port, retrying while nobody listens yet (rank 0 may start later than this
// rank) until the deadline; then Error naming the address.
Socket connect_with_retry(const std::string& addr, int port, Deadline deadline, const std::string& what);

// A free TCP port on `addr` at the moment of the call (bound to port 0 and released): for the
// local launcher's MASTER_PORT.
int free_tcp_port(const std::string& addr);

}  // namespace quartet::dist

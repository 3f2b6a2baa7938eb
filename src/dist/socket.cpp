#include "dist/socket.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <memory>
#include <thread>

namespace quartet::dist {

namespace {

std::string system_error(int err) { return std::strerror(err); }

// Milliseconds until the deadline for poll(): at least 0, at most a day (poll takes an int).
int poll_ms(Deadline deadline) {
  const double s = seconds_left(deadline);
  if (s <= 0) return 0;
  return static_cast<int>(std::min(s * 1000.0 + 1.0, 86400000.0));
}

struct AddrInfoDeleter {
  void operator()(addrinfo* a) const { freeaddrinfo(a); }
};

std::unique_ptr<addrinfo, AddrInfoDeleter> resolve(const std::string& addr, int port, bool passive) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  if (passive) hints.ai_flags = AI_PASSIVE;
  addrinfo* out = nullptr;
  const std::string service = std::to_string(port);
  const int rc = getaddrinfo(addr.empty() ? nullptr : addr.c_str(), service.c_str(), &hints, &out);
  if (rc != 0) {
    throw Error(fmt::format("cannot resolve the address '{}' (MASTER_ADDR): {}", addr, gai_strerror(rc)));
  }
  return std::unique_ptr<addrinfo, AddrInfoDeleter>(out);
}

void set_nodelay(int fd) {
  // Collectives send small control messages (a header, a flag) and wait for the answer:
  // Nagle's algorithm would hold each one back for a round trip.
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

std::string endpoint(const std::string& addr, int port) {
  return addr.find(':') != std::string::npos ? fmt::format("[{}]:{}", addr, port) : fmt::format("{}:{}", addr, port);
}

}  // namespace

Deadline deadline_after(double seconds) {
  // Far enough to mean "no deadline" without overflowing the clock.
  const double capped = std::min(seconds, 1e9);
  return Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(capped));
}

double seconds_left(Deadline deadline) { return std::chrono::duration<double>(deadline - Clock::now()).count(); }

Socket::~Socket() { close(); }

Socket& Socket::operator=(Socket&& o) noexcept {
  if (this != &o) {
    close();
    fd_ = o.fd_;
    o.fd_ = -1;
  }
  return *this;
}

void Socket::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

void Socket::send_all(const void* data, std::size_t bytes, Deadline deadline, const std::string& peer) {
  const auto* p = static_cast<const char*>(data);
  while (bytes > 0) {
    pollfd pfd{fd_, POLLOUT, 0};
    const int ready = ::poll(&pfd, 1, poll_ms(deadline));
    if (ready < 0) {
      if (errno == EINTR) continue;
      throw PeerLost(fmt::format("waiting to send to {}: {}", peer, system_error(errno)));
    }
    if (ready == 0) throw PeerTimeout(fmt::format("{} did not take our data within the timeout", peer));
    // MSG_NOSIGNAL: a closed peer is an error here, not a SIGPIPE that kills the process.
    const ssize_t n = ::send(fd_, p, bytes, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
      throw PeerLost(fmt::format("{} closed its connection (it exited, failed or was killed): {}", peer,
                                 system_error(errno)));
    }
    p += n;
    bytes -= static_cast<std::size_t>(n);
  }
}

void Socket::recv_all(void* data, std::size_t bytes, Deadline deadline, const std::string& peer) {
  auto* p = static_cast<char*>(data);
  while (bytes > 0) {
    pollfd pfd{fd_, POLLIN, 0};
    const int ready = ::poll(&pfd, 1, poll_ms(deadline));
    if (ready < 0) {
      if (errno == EINTR) continue;
      throw PeerLost(fmt::format("waiting for {}: {}", peer, system_error(errno)));
    }
    if (ready == 0) throw PeerTimeout(fmt::format("{} did not answer within the timeout", peer));
    const ssize_t n = ::recv(fd_, p, bytes, 0);
    if (n == 0) throw PeerLost(fmt::format("{} closed its connection (it exited, failed or was killed)", peer));
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
      // A peer that dies with our data unread in its buffer resets the connection instead of
      // closing it: the same event for the user.
      if (errno == ECONNRESET) {
        throw PeerLost(fmt::format("{} closed its connection (it exited, failed or was killed): {}", peer,
                                   system_error(errno)));
      }
      throw PeerLost(fmt::format("the connection to {} broke: {}", peer, system_error(errno)));
    }
    p += n;
    bytes -= static_cast<std::size_t>(n);
  }
}

Socket listen_tcp(const std::string& addr, int port, int backlog) {
  const auto info = resolve(addr, port, true);
  std::string last_error = "no address";
  for (const addrinfo* a = info.get(); a != nullptr; a = a->ai_next) {
    Socket s(::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol));
    if (!s.open()) {
      last_error = system_error(errno);
      continue;
    }
    int one = 1;
    ::setsockopt(s.fd(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (::bind(s.fd(), a->ai_addr, a->ai_addrlen) != 0 || ::listen(s.fd(), backlog) != 0) {
      last_error = system_error(errno);
      continue;
    }
    return s;
  }
  throw Error(fmt::format("rank 0 cannot listen on {} (MASTER_ADDR:MASTER_PORT): {}", endpoint(addr, port), last_error));
}

int local_port(const Socket& listener) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (::getsockname(listener.fd(), reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
    throw Error(fmt::format("getsockname: {}", system_error(errno)));
  }
  if (ss.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
}

Socket accept_until(Socket& listener, Deadline deadline, const std::string& what) {
  for (;;) {
    pollfd pfd{listener.fd(), POLLIN, 0};
    const int ready = ::poll(&pfd, 1, poll_ms(deadline));
    if (ready < 0) {
      if (errno == EINTR) continue;
      throw Error(fmt::format("{}: {}", what, system_error(errno)));
    }
    if (ready == 0) throw PeerTimeout(what);
    Socket s(::accept4(listener.fd(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!s.open()) {
      if (errno == EINTR || errno == ECONNABORTED || errno == EAGAIN) continue;
      throw Error(fmt::format("{}: {}", what, system_error(errno)));
    }
    set_nodelay(s.fd());
    return s;
  }
}

Socket connect_with_retry(const std::string& addr, int port, Deadline deadline, const std::string& what) {
  std::string last_error;
  for (;;) {
    const auto info = resolve(addr, port, false);
    for (const addrinfo* a = info.get(); a != nullptr; a = a->ai_next) {
      Socket s(::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol));
      if (!s.open()) {
        last_error = system_error(errno);
        continue;
      }
      if (::connect(s.fd(), a->ai_addr, a->ai_addrlen) == 0) {
        set_nodelay(s.fd());
        return s;
      }
      last_error = system_error(errno);
    }
    if (seconds_left(deadline) <= 0) {
      throw PeerTimeout(fmt::format("{}: could not reach rank 0 at {} ({}); is rank 0 running, and do all ranks have "
                                    "the same MASTER_ADDR and MASTER_PORT?",
                                    what, endpoint(addr, port), last_error));
    }
    // Rank 0 may not listen yet: try again shortly.
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

int free_tcp_port(const std::string& addr) {
  Socket s = listen_tcp(addr, 0, 1);
  return local_port(s);
}

}  // namespace quartet::dist

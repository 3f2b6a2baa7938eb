// The connections of a multi-process run: every rank holds one TCP connection to rank 0 (the
// hub), which holds one to each. The rendezvous builds them; the CPU communicator and the
// control messages of a run travel over them. Messages are a fixed header (kind, operation,
// element count, payload length) and a payload; each side checks that the other is in the same
// operation, so ranks that run different code fail with a message instead of mixing data.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "dist/socket.h"

namespace quartet::dist {

enum class MessageKind : std::uint32_t {
  hello = 1,   // leaf -> hub: rank, world size
  welcome = 2, // hub -> leaf: everybody arrived
  abort = 3,   // hub -> leaf: the run stops; the payload says why
  data = 4,    // a collective's payload
  bye = 5,     // an orderly end (PeerWatch)
};

struct MessageHeader {
  std::uint32_t magic = 0;
  std::uint32_t kind = 0;
  std::uint64_t op = 0;     // the operation (collective code), or a rank for hello
  std::uint64_t count = 0;  // elements of the operation, or the world size for hello
  std::uint64_t bytes = 0;  // payload bytes that follow
};

constexpr std::uint32_t kMagic = 0x51525444;  // "QRTD"

// Thrown on a leaf when the hub sends an abort: the message is the hub's reason.
class RunAborted : public Error {
 public:
  using Error::Error;
};

struct Star {
  int rank = 0;
  int world_size = 1;
  std::string endpoint;           // MASTER_ADDR:MASTER_PORT, for messages
  double timeout_seconds = 600;   // each wait for a peer
  std::vector<Socket> peers;      // hub: peers[r] is rank r's connection (peers[0] unused); leaf: peers[0] is the hub's

  bool hub() const { return rank == 0; }
  Socket& hub_link() { return peers[0]; }
  static std::string name(int r) { return "rank " + std::to_string(r); }

  void send(Socket& s, const std::string& peer, MessageKind kind, std::uint64_t op, std::uint64_t count,
            const void* payload, std::size_t bytes, Deadline deadline);
  // Receives a header of `kind` with `op` and `count` and a payload of exactly `bytes` into
  // `payload`. An abort from the hub is thrown as RunAborted; anything else unexpected as Error.
  void recv(Socket& s, const std::string& peer, MessageKind kind, std::uint64_t op, std::uint64_t count,
            void* payload, std::size_t bytes, Deadline deadline, const char* what);
  // Receives a message of `kind` whose payload length is free (a blob), up to max_bytes.
  std::string recv_blob(Socket& s, const std::string& peer, MessageKind kind, std::uint64_t op, Deadline deadline,
                        std::size_t max_bytes);
  // Hub: tells every leaf still connected that the run stops, and why (best effort, briefly).
  void abort_all(const std::string& why);
};

}  // namespace quartet::dist

#include "dist/star.h"

#include <fmt/format.h>

#include <cstring>

namespace quartet::dist {

void Star::send(Socket& s, const std::string& peer, MessageKind kind, std::uint64_t op, std::uint64_t count,
                const void* payload, std::size_t bytes, Deadline deadline) {
  MessageHeader h;
  h.magic = kMagic;
  h.kind = static_cast<std::uint32_t>(kind);
  h.op = op;
  h.count = count;
  h.bytes = bytes;
  s.send_all(&h, sizeof(h), deadline, peer);
  if (bytes > 0) s.send_all(payload, bytes, deadline, peer);
}

namespace {

MessageHeader read_header(Socket& s, const std::string& peer, Deadline deadline) {
  MessageHeader h;
  s.recv_all(&h, sizeof(h), deadline, peer);
  if (h.magic != kMagic) {
    throw Error(fmt::format("{} sent something that is not a quartet message: is another program connected to "
                            "MASTER_ADDR:MASTER_PORT?",
                            peer));
  }
  return h;
}

[[noreturn]] void throw_abort(Socket& s, const std::string& peer, const MessageHeader& h, Deadline deadline) {
  std::string why(std::min<std::uint64_t>(h.bytes, 1 << 16), '\0');
  s.recv_all(why.data(), why.size(), deadline, peer);
  throw RunAborted(why);
}

}  // namespace

void Star::recv(Socket& s, const std::string& peer, MessageKind kind, std::uint64_t op, std::uint64_t count,
                void* payload, std::size_t bytes, Deadline deadline, const char* what) {
  const MessageHeader h = read_header(s, peer, deadline);
  if (h.kind == static_cast<std::uint32_t>(MessageKind::abort)) throw_abort(s, peer, h, deadline);
  if (h.kind != static_cast<std::uint32_t>(kind) || h.op != op || h.count != count || h.bytes != bytes) {
    throw Error(fmt::format("{} and {} are out of step in {}: {} sent message kind {} (operation {}, {} elements, {} "
                            "bytes) where kind {} (operation {}, {} elements, {} bytes) was expected; do all ranks run "
                            "the same program with the same settings?",
                            name(rank), peer, what, peer, h.kind, h.op, h.count, h.bytes,
                            static_cast<std::uint32_t>(kind), op, count, bytes));
  }
  if (bytes > 0) s.recv_all(payload, bytes, deadline, peer);
}

std::string Star::recv_blob(Socket& s, const std::string& peer, MessageKind kind, std::uint64_t op, Deadline deadline,
                            std::size_t max_bytes) {
  const MessageHeader h = read_header(s, peer, deadline);
  if (h.kind == static_cast<std::uint32_t>(MessageKind::abort)) throw_abort(s, peer, h, deadline);
  if (h.kind != static_cast<std::uint32_t>(kind) || h.op != op || h.bytes > max_bytes) {
    throw Error(fmt::format("{} and {} are out of step: {} sent message kind {} (operation {}, {} bytes) where kind {} "
                            "(operation {}, at most {} bytes) was expected",
                            name(rank), peer, peer, h.kind, h.op, h.bytes, static_cast<std::uint32_t>(kind), op,
                            max_bytes));
  }
  std::string blob(h.bytes, '\0');
  if (h.bytes > 0) s.recv_all(blob.data(), blob.size(), deadline, peer);
  return blob;
}

void Star::abort_all(const std::string& why) {
  if (!hub()) return;
  const Deadline soon = deadline_after(2.0);
  for (int r = 1; r < static_cast<int>(peers.size()); ++r) {
    if (!peers[r].open()) continue;
    try {
      send(peers[r], name(r), MessageKind::abort, 0, 0, why.data(), why.size(), soon);
    } catch (const Error&) {
      // That rank is gone too: nothing to tell it.
    }
  }
}

}  // namespace quartet::dist

#include "quartet/dist/rendezvous.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cstring>
#include <set>

#include "dist/star.h"

namespace quartet {

using namespace dist;

namespace {

constexpr std::uint64_t kOpBroadcast = 0xB0;
constexpr std::uint64_t kOpGather = 0xB1;
constexpr std::size_t kMaxBlob = std::size_t{1} << 30;

// Rank 0 listens on the loopback address when MASTER_ADDR is one (nothing outside this machine
// can connect), else on every interface: a host name may resolve to another address on this
// node than the one the other nodes reach it by.
std::string listen_address(const std::string& master_addr) {
  if (master_addr == "localhost" || master_addr == "::1" || master_addr.rfind("127.", 0) == 0) return master_addr;
  return "";
}

std::string rank_list(const std::vector<int>& ranks) {
  std::string s;
  for (std::size_t i = 0; i < ranks.size(); ++i) {
    if (i > 0) s += ", ";
    if (i == 16) {
      s += fmt::format("... ({} in all)", ranks.size());
      break;
    }
    s += std::to_string(ranks[i]);
  }
  return s;
}

std::unique_ptr<Star> hub_rendezvous(const DistEnvironment& env, double timeout) {
  auto star = std::make_unique<Star>();
  star->rank = 0;
  star->world_size = env.world_size;
  star->endpoint = env.endpoint();
  star->timeout_seconds = timeout;
  star->peers.resize(static_cast<std::size_t>(env.world_size));
  if (env.world_size == 1) return star;
  Socket listener = listen_tcp(listen_address(env.master_addr), env.master_port, std::min(env.world_size, 4096));
  const Deadline deadline = deadline_after(timeout);
  int arrived = 1;
  while (arrived < env.world_size) {
    Socket s;
    try {
      s = accept_until(listener, deadline, "rendezvous");
    } catch (const PeerTimeout&) {
      std::vector<int> missing;
      for (int r = 1; r < env.world_size; ++r) {
        if (!star->peers[static_cast<std::size_t>(r)].open()) missing.push_back(r);
      }
      const std::string why = fmt::format(
          "rendezvous at {} timed out after {} s: rank{} {} of {} did not arrive (not started, crashed before "
          "connecting, or given another MASTER_ADDR/MASTER_PORT)",
          star->endpoint, timeout, missing.size() == 1 ? "" : "s", rank_list(missing), env.world_size);
      star->abort_all(why);
      throw Error(why);
    }
    MessageHeader h;
    try {
      // A connection that says nothing soon is not one of ours: drop it and keep listening.
      s.recv_all(&h, sizeof(h), std::min(deadline, deadline_after(10.0)), "a connecting process");
    } catch (const Error&) {
      continue;
    }
    if (h.magic != kMagic || h.kind != static_cast<std::uint32_t>(MessageKind::hello)) continue;
    const auto rank = static_cast<std::int64_t>(h.op);
    const auto world = static_cast<std::int64_t>(h.count);
    std::string why;
    if (world != env.world_size) {
      why = fmt::format("rank {} has WORLD_SIZE={} but rank 0 has WORLD_SIZE={}: every rank needs the same value", rank,
                        world, env.world_size);
    } else if (rank < 1 || rank >= env.world_size) {
      why = fmt::format("a process arrived with RANK={}, outside 1..{}", rank, env.world_size - 1);
    } else if (star->peers[static_cast<std::size_t>(rank)].open()) {
      why = fmt::format("two processes arrived with RANK={}: every rank needs its own number", rank);
    }
    if (!why.empty()) {
      why = fmt::format("rendezvous at {} failed: {}", star->endpoint, why);
      star->peers.push_back(std::move(s));  // told too, then dropped
      star->abort_all(why);
      throw Error(why);
    }
    star->peers[static_cast<std::size_t>(rank)] = std::move(s);
    ++arrived;
  }
  for (int r = 1; r < env.world_size; ++r) {
    star->send(star->peers[static_cast<std::size_t>(r)], Star::name(r), MessageKind::welcome, 0,
               static_cast<std::uint64_t>(env.world_size), nullptr, 0, deadline_after(timeout));
  }
  return star;
}

std::unique_ptr<Star> leaf_rendezvous(const DistEnvironment& env, double timeout) {
  auto star = std::make_unique<Star>();
  star->rank = env.rank;
  star->world_size = env.world_size;
  star->endpoint = env.endpoint();
  star->timeout_seconds = timeout;
  const std::string what = fmt::format("rank {} joining the rendezvous", env.rank);
  const Deadline deadline = deadline_after(timeout);
  star->peers.push_back(connect_with_retry(env.master_addr, env.master_port, deadline, what));
  Socket& hub = star->hub_link();
  // Past rank 0's own deadline, so that its message (which ranks are missing) arrives first.
  const Deadline welcome_deadline = deadline_after(timeout + 5.0);
  try {
    star->send(hub, "rank 0", MessageKind::hello, static_cast<std::uint64_t>(env.rank),
               static_cast<std::uint64_t>(env.world_size), nullptr, 0, welcome_deadline);
    star->recv(hub, "rank 0", MessageKind::welcome, 0, static_cast<std::uint64_t>(env.world_size), nullptr, 0,
               welcome_deadline, "the rendezvous");
  } catch (const RunAborted& e) {
    throw Error(e.what());
  } catch (const PeerTimeout&) {
    throw Error(fmt::format("{}: rank 0 at {} took this rank in but the other ranks did not all arrive within {} s",
                            what, star->endpoint, timeout));
  } catch (const PeerLost& e) {
    throw Error(fmt::format("{}: rank 0 at {} stopped before every rank had arrived ({})", what, star->endpoint,
                            e.what()));
  }
  return star;
}

}  // namespace

Rendezvous::Rendezvous(std::unique_ptr<Star> star) : star_(std::move(star)) {}
Rendezvous::~Rendezvous() = default;

std::unique_ptr<Rendezvous> Rendezvous::connect(const DistEnvironment& env, double timeout_seconds) {
  if (!(timeout_seconds > 0)) throw Error(fmt::format("rendezvous timeout must be > 0 seconds, got {}", timeout_seconds));
  auto star = env.rank == 0 ? hub_rendezvous(env, timeout_seconds) : leaf_rendezvous(env, timeout_seconds);
  return std::unique_ptr<Rendezvous>(new Rendezvous(std::move(star)));
}

int Rendezvous::rank() const { return star_->rank; }
int Rendezvous::world_size() const { return star_->world_size; }
double Rendezvous::timeout_seconds() const { return star_->timeout_seconds; }
std::unique_ptr<Star> Rendezvous::release() { return std::move(star_); }

std::string Rendezvous::broadcast(const std::string& blob) {
  Star& s = *star_;
  const Deadline deadline = deadline_after(s.timeout_seconds);
  if (!s.hub()) return s.recv_blob(s.hub_link(), "rank 0", MessageKind::data, kOpBroadcast, deadline, kMaxBlob);
  for (int r = 1; r < s.world_size; ++r) {
    s.send(s.peers[static_cast<std::size_t>(r)], Star::name(r), MessageKind::data, kOpBroadcast, blob.size(),
           blob.data(), blob.size(), deadline);
  }
  return blob;
}

std::vector<std::string> Rendezvous::all_gather(const std::string& blob) {
  Star& s = *star_;
  const Deadline deadline = deadline_after(s.timeout_seconds);
  if (!s.hub()) {
    s.send(s.hub_link(), "rank 0", MessageKind::data, kOpGather, blob.size(), blob.data(), blob.size(), deadline);
  }
  std::vector<std::string> all;
  std::string packed;
  if (s.hub()) {
    all.push_back(blob);
    for (int r = 1; r < s.world_size; ++r) {
      all.push_back(s.recv_blob(s.peers[static_cast<std::size_t>(r)], Star::name(r), MessageKind::data, kOpGather,
                                deadline, kMaxBlob));
    }
    for (const std::string& b : all) {
      const std::uint64_t n = b.size();
      packed.append(reinterpret_cast<const char*>(&n), sizeof(n));
      packed += b;
    }
  }
  packed = broadcast(packed);
  if (s.hub()) return all;
  std::size_t at = 0;
  for (int r = 0; r < s.world_size; ++r) {
    std::uint64_t n = 0;
    if (at + sizeof(n) > packed.size()) throw Error("rendezvous: rank 0 sent a truncated gather");
    std::memcpy(&n, packed.data() + at, sizeof(n));
    at += sizeof(n);
    if (n > packed.size() - at) throw Error("rendezvous: rank 0 sent a truncated gather");
    all.push_back(packed.substr(at, n));
    at += n;
  }
  return all;
}

}  // namespace quartet

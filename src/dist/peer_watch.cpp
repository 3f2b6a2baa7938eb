#include "quartet/dist/peer_watch.h"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <fmt/format.h>

#include <atomic>
#include <thread>
#include <vector>

#include "dist/star.h"
#include "quartet/dist/rendezvous.h"

namespace quartet {

using namespace dist;

struct PeerWatch::State {
  std::unique_ptr<Star> star;
  std::function<void(const std::string&)> on_lost;
  int wake[2] = {-1, -1};  // a pipe: written to stop the thread
  std::vector<bool> done;  // peers that said bye (or were dropped)
  std::atomic<bool> finishing{false};
  bool reported = false;  // only the watch thread reads and writes it
  std::thread thread;

  // The first loss is the cause; the ranks that then end because rank 0 stopped the run are
  // its consequences, not news.
  void lost(const std::string& why) {
    if (finishing.load() || reported) return;
    reported = true;
    star->abort_all(fmt::format("rank 0 stops the run: {}", why));
    on_lost(why);
  }

  // What a readable connection brings: bye, abort, or its end.
  void read_peer(int r) {
    Socket& s = star->peers[static_cast<std::size_t>(r)];
    const std::string peer = star->hub() ? Star::name(r) : "rank 0";
    MessageHeader h;
    try {
      s.recv_all(&h, sizeof(h), deadline_after(10.0), peer);
    } catch (const Error& e) {
      done[static_cast<std::size_t>(r)] = true;
      lost(e.what());
      return;
    }
    if (h.magic == kMagic && h.kind == static_cast<std::uint32_t>(MessageKind::bye)) {
      done[static_cast<std::size_t>(r)] = true;
      return;
    }
    done[static_cast<std::size_t>(r)] = true;
    if (h.magic == kMagic && h.kind == static_cast<std::uint32_t>(MessageKind::abort)) {
      std::string why(std::min<std::uint64_t>(h.bytes, 1 << 16), '\0');
      try {
        s.recv_all(why.data(), why.size(), deadline_after(10.0), peer);
      } catch (const Error&) {
      }
      lost(why);
      return;
    }
    lost(fmt::format("{} sent an unexpected message", peer));
  }

  void watch() {
    for (;;) {
      std::vector<pollfd> fds;
      std::vector<int> ranks;
      fds.push_back({wake[0], POLLIN, 0});
      ranks.push_back(-1);
      const int first = star->hub() ? 1 : 0;
      const int last = star->hub() ? star->world_size : 1;
      for (int r = first; r < last; ++r) {
        if (done[static_cast<std::size_t>(r)] || !star->peers[static_cast<std::size_t>(r)].open()) continue;
        fds.push_back({star->peers[static_cast<std::size_t>(r)].fd(), POLLIN, 0});
        ranks.push_back(r);
      }
      if (fds.size() == 1) return;  // every peer has ended in order
      if (::poll(fds.data(), fds.size(), -1) < 0) continue;  // EINTR
      if (fds[0].revents != 0) return;
      for (std::size_t i = 1; i < fds.size(); ++i) {
        if (fds[i].revents != 0) read_peer(ranks[i]);
      }
    }
  }
};

PeerWatch::PeerWatch(std::unique_ptr<Rendezvous> rendezvous, std::function<void(const std::string&)> on_lost)
    : state_(std::make_unique<State>()) {
  State& s = *state_;
  s.star = rendezvous->release();
  s.on_lost = std::move(on_lost);
  s.done.assign(s.star->peers.size(), false);
  if (::pipe2(s.wake, O_CLOEXEC) != 0) throw Error("peer watch: cannot create a pipe");
  s.thread = std::thread([&s] { s.watch(); });
}

void PeerWatch::finish() {
  State& s = *state_;
  if (s.finishing.exchange(true)) return;
  const Deadline soon = deadline_after(5.0);
  const int first = s.star->hub() ? 1 : 0;
  const int last = s.star->hub() ? s.star->world_size : 1;
  for (int r = first; r < last; ++r) {
    Socket& peer = s.star->peers[static_cast<std::size_t>(r)];
    if (!peer.open()) continue;
    try {
      s.star->send(peer, Star::name(r), MessageKind::bye, 0, 0, nullptr, 0, soon);
    } catch (const Error&) {
      // That peer has ended already.
    }
  }
}

PeerWatch::~PeerWatch() {
  State& s = *state_;
  const char stop = 1;
  if (::write(s.wake[1], &stop, 1) < 0) {
    // The thread then ends when its peers do.
  }
  if (s.thread.joinable()) s.thread.join();
  ::close(s.wake[0]);
  ::close(s.wake[1]);
}

}  // namespace quartet

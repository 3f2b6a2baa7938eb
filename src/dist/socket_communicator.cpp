// The CPU communicator: a star through rank 0. Rank 0 receives every rank's buffer in rank
// order, adds them in that order and sends the result back. Traffic is not balanced (rank 0
// carries all of it), which is fine for what it is for: CPU runs and tests of the
// data-parallel logic on one machine. GPU runs use NCCL.
#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <utility>
#include <vector>

#include "dist/star.h"
#include "quartet/dist/communicator.h"
#include "quartet/dist/rendezvous.h"

namespace quartet {

using namespace dist;

std::size_t comm_type_size(CommType type) {
  switch (type) {
    case CommType::f32: return 4;
    case CommType::f64: return 8;
    case CommType::bf16: return 2;
    case CommType::u8: return 1;
  }
  return 1;
}

const char* comm_type_name(CommType type) {
  switch (type) {
    case CommType::f32: return "f32";
    case CommType::f64: return "f64";
    case CommType::bf16: return "bf16";
    case CommType::u8: return "u8";
  }
  return "?";
}

void Communicator::barrier() {
  double one = 1;
  all_reduce_sum_host(&one, 1);
}

namespace {

enum Op : std::uint64_t { kAllReduce = 1, kReduceScatter = 2, kAllGather = 3, kBroadcast = 4, kHostSum = 5, kRangeToOwners = 6,
                          kGatherToFirst = 7 };

std::uint64_t op_code(Op op, CommType type, int root = 0) {
  return (static_cast<std::uint64_t>(root) << 16) | (static_cast<std::uint64_t>(op) << 8) |
         static_cast<std::uint64_t>(type);
}

template <class T>
void add_into(void* acc, const void* x, std::size_t n) {
  T* a = static_cast<T*>(acc);
  const T* b = static_cast<const T*>(x);
  for (std::size_t i = 0; i < n; ++i) a[i] += b[i];
}

class SocketCommunicator final : public Communicator {
 public:
  explicit SocketCommunicator(std::unique_ptr<Star> star) : s_(std::move(star)) {}
  ~SocketCommunicator() override = default;

  int rank() const override { return s_->rank; }
  int world_size() const override { return s_->world_size; }
  std::string name() const override { return fmt::format("tcp through rank 0 at {}", s_->endpoint); }

  void all_reduce_sum(void* data, std::size_t count, CommType type) override {
    check_sum_type(type, "all_reduce_sum");
    guarded([&] { reduce_to_hub(data, count, type, op_code(kAllReduce, type)); broadcast_from_hub(data, count * comm_type_size(type), op_code(kAllReduce, type), count); });
  }

  void reduce_scatter_sum(void* data, std::size_t shard_count, CommType type) override {
    check_sum_type(type, "reduce_scatter_sum");
    guarded([&] {
      const std::size_t total = shard_count * static_cast<std::size_t>(world_size());
      const std::uint64_t op = op_code(kReduceScatter, type);
      reduce_to_hub(data, total, type, op);
      const std::size_t shard_bytes = shard_count * comm_type_size(type);
      const Deadline deadline = deadline_after(s_->timeout_seconds);
      if (s_->hub()) {
        for (int r = 1; r < world_size(); ++r) {
          s_->send(peer(r), Star::name(r), MessageKind::data, op, shard_count,
                   static_cast<char*>(data) + static_cast<std::size_t>(r) * shard_bytes, shard_bytes, deadline);
        }
      } else {
        s_->recv(s_->hub_link(), "rank 0", MessageKind::data, op, shard_count,
                 static_cast<char*>(data) + static_cast<std::size_t>(rank()) * shard_bytes, shard_bytes, deadline,
                 "reduce_scatter_sum");
      }
    });
  }

  void all_gather(void* data, std::size_t shard_count, CommType type) override {
    guarded([&] {
      const std::uint64_t op = op_code(kAllGather, type);
      const std::size_t shard_bytes = shard_count * comm_type_size(type);
      const Deadline deadline = deadline_after(s_->timeout_seconds);
      char* bytes = static_cast<char*>(data);
      if (s_->hub()) {
        for (int r = 1; r < world_size(); ++r) {
          s_->recv(peer(r), Star::name(r), MessageKind::data, op, shard_count,
                   bytes + static_cast<std::size_t>(r) * shard_bytes, shard_bytes, deadline, "all_gather");
        }
      } else {
        s_->send(s_->hub_link(), "rank 0", MessageKind::data, op, shard_count,
                 bytes + static_cast<std::size_t>(rank()) * shard_bytes, shard_bytes, deadline);
      }
      broadcast_from_hub(data, shard_bytes * static_cast<std::size_t>(world_size()), op,
                         shard_count * static_cast<std::size_t>(world_size()));
    });
  }

  void reduce_range_to_owners(void* data, std::size_t begin, std::size_t end, std::size_t shard_count,
                              CommType type) override {
    check_sum_type(type, "reduce_range_to_owners");
    const std::size_t total = shard_count * static_cast<std::size_t>(world_size());
    if (begin > end || end > total) {
      throw Error(fmt::format("reduce_range_to_owners: range [{}, {}) outside the buffer of {} shards of {} elements",
                              begin, end, world_size(), shard_count));
    }
    if (begin == end) return;
    guarded([&] {
      // The whole range summed at rank 0 in rank order, element by element: the sums of
      // reduce_scatter_sum, whatever the ranges are.
      const std::uint64_t op = op_code(kRangeToOwners, type);
      const std::size_t element = comm_type_size(type);
      char* range = static_cast<char*>(data) + begin * element;
      reduce_to_hub(range, end - begin, type, op);
      const Deadline deadline = deadline_after(s_->timeout_seconds);
      const auto part = [&](int r) {  // shard r's part of the range, relative to begin
        const std::size_t lo = std::max(begin, static_cast<std::size_t>(r) * shard_count);
        const std::size_t hi = std::min(end, static_cast<std::size_t>(r + 1) * shard_count);
        return std::pair<std::size_t, std::size_t>{lo - begin, lo < hi ? hi - lo : 0};
      };
      if (s_->hub()) {
        for (int r = 1; r < world_size(); ++r) {
          const auto [offset, count] = part(r);
          if (count > 0) {
            s_->send(peer(r), Star::name(r), MessageKind::data, op, count, range + offset * element, count * element,
                     deadline);
          }
        }
      } else {
        const auto [offset, count] = part(rank());
        if (count > 0) {
          s_->recv(s_->hub_link(), "rank 0", MessageKind::data, op, count, range + offset * element, count * element,
                   deadline, "reduce_range_to_owners");
        }
      }
    });
  }

  void gather_to_first(const void* mine, void* all, std::size_t shard_count, CommType type) override {
    guarded([&] {
      const std::uint64_t op = op_code(kGatherToFirst, type);
      const std::size_t shard_bytes = shard_count * comm_type_size(type);
      const Deadline deadline = deadline_after(s_->timeout_seconds);
      if (s_->hub()) {
        char* bytes = static_cast<char*>(all);
        if (shard_bytes > 0) std::memmove(bytes, mine, shard_bytes);
        for (int r = 1; r < world_size(); ++r) {
          s_->recv(peer(r), Star::name(r), MessageKind::data, op, shard_count,
                   bytes + static_cast<std::size_t>(r) * shard_bytes, shard_bytes, deadline, "gather_to_first");
        }
      } else {
        s_->send(s_->hub_link(), "rank 0", MessageKind::data, op, shard_count, mine, shard_bytes, deadline);
      }
    });
  }

  void broadcast(void* data, std::size_t count, CommType type, int root) override {
    if (root < 0 || root >= world_size()) {
      throw Error(fmt::format("broadcast from rank {}: the world has ranks 0..{}", root, world_size() - 1));
    }
    guarded([&] {
      const std::uint64_t op = op_code(kBroadcast, type, root);
      const std::size_t bytes = count * comm_type_size(type);
      const Deadline deadline = deadline_after(s_->timeout_seconds);
      if (root != 0) {
        if (rank() == root) {
          s_->send(s_->hub_link(), "rank 0", MessageKind::data, op, count, data, bytes, deadline);
        } else if (s_->hub()) {
          s_->recv(peer(root), Star::name(root), MessageKind::data, op, count, data, bytes, deadline, "broadcast");
        }
      }
      if (s_->hub()) {
        for (int r = 1; r < world_size(); ++r) {
          if (r != root) s_->send(peer(r), Star::name(r), MessageKind::data, op, count, data, bytes, deadline);
        }
      } else if (rank() != root) {
        s_->recv(s_->hub_link(), "rank 0", MessageKind::data, op, count, data, bytes, deadline, "broadcast");
      }
    });
  }

  void all_reduce_sum_host(double* values, std::size_t count) override {
    guarded([&] {
      reduce_to_hub(values, count, CommType::f64, op_code(kHostSum, CommType::f64));
      broadcast_from_hub(values, count * sizeof(double), op_code(kHostSum, CommType::f64), count);
    });
  }

 private:
  Socket& peer(int r) { return s_->peers[static_cast<std::size_t>(r)]; }

  static void check_sum_type(CommType type, const char* what) {
    if (type != CommType::f32 && type != CommType::f64) {
      throw Error(fmt::format("{}: sums are over f32 or f64 elements, not {}", what, comm_type_name(type)));
    }
  }

  // Runs one collective; after a failure the communicator is unusable (the ranks are out of
  // step), and rank 0 tells every rank still connected why the run stops.
  template <class Body>
  void guarded(Body&& body) {
    if (!broken_.empty()) throw Error(fmt::format("the run's communication failed earlier: {}", broken_));
    try {
      body();
    } catch (const RunAborted& e) {
      broken_ = e.what();
      throw Error(fmt::format("rank {}: the run stops: {}", rank(), e.what()));
    } catch (const Error& e) {
      broken_ = e.what();
      s_->abort_all(fmt::format("rank 0 stopped the run: {}", e.what()));
      throw Error(fmt::format("rank {}: {}", rank(), e.what()));
    }
  }

  // Leaves send their `count` elements; rank 0 adds them to its own in rank order.
  void reduce_to_hub(void* data, std::size_t count, CommType type, std::uint64_t op) {
    const std::size_t bytes = count * comm_type_size(type);
    const Deadline deadline = deadline_after(s_->timeout_seconds);
    if (!s_->hub()) {
      s_->send(s_->hub_link(), "rank 0", MessageKind::data, op, count, data, bytes, deadline);
      return;
    }
    scratch_.resize(bytes);
    for (int r = 1; r < world_size(); ++r) {
      s_->recv(peer(r), Star::name(r), MessageKind::data, op, count, scratch_.data(), bytes, deadline, "a sum");
      if (type == CommType::f32) {
        add_into<float>(data, scratch_.data(), count);
      } else {
        add_into<double>(data, scratch_.data(), count);
      }
    }
  }

  void broadcast_from_hub(void* data, std::size_t bytes, std::uint64_t op, std::size_t count) {
    const Deadline deadline = deadline_after(s_->timeout_seconds);
    if (s_->hub()) {
      for (int r = 1; r < world_size(); ++r) {
        s_->send(peer(r), Star::name(r), MessageKind::data, op, count, data, bytes, deadline);
      }
    } else {
      s_->recv(s_->hub_link(), "rank 0", MessageKind::data, op, count, data, bytes, deadline, "a collective");
    }
  }

  std::unique_ptr<Star> s_;
  std::vector<char> scratch_;
  std::string broken_;
};

}  // namespace

std::unique_ptr<Communicator> make_socket_communicator(std::unique_ptr<Rendezvous> rendezvous) {
  return std::make_unique<SocketCommunicator>(rendezvous->release());
}

}  // namespace quartet

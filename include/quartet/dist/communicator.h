// Collective operations among the ranks of a data-parallel run, over buffers where the
// backend keeps its tensors: host memory for the CPU implementation (over the rendezvous' TCP
// connections), device memory for NCCL (queued on the CUDA backend's stream, no host wait).
//
// Sums run in a fixed order for a given world size, so a run is bitwise reproducible: the CPU
// implementation adds rank 0's values, then rank 1's, ... (((x0 + x1) + x2) + ...); NCCL's
// order is fixed by its algorithm and topology (docs/multi-gpu.md says how to pin them).
//
// Failure: a peer that exits, fails or is killed, or that does not answer within the timeout,
// makes the call throw Error naming the rank on every rank still running; nobody waits forever.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace quartet {

class Rendezvous;

enum class CommType : std::uint8_t { f32, f64, bf16, u8 };
std::size_t comm_type_size(CommType type);
const char* comm_type_name(CommType type);

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  virtual std::string name() const = 0;

  // Every rank's `count` elements summed, on every rank (f32 and f64 only).
  virtual void all_reduce_sum(void* data, std::size_t count, CommType type) = 0;
  // `data` holds world_size() shards of shard_count elements each. Afterwards shard rank() of
  // this rank's data holds the sum over ranks of that shard; the other shards are unspecified.
  virtual void reduce_scatter_sum(void* data, std::size_t shard_count, CommType type) = 0;
  // `data` holds world_size() shards of shard_count elements; each rank's own shard (rank())
  // is copied into every rank's data.
  virtual void all_gather(void* data, std::size_t shard_count, CommType type) = 0;
  // Elements [begin, end) of a buffer laid out as world_size() shards of shard_count elements
  // (as reduce_scatter_sum takes it): afterwards the part of the range within shard rank()
  // holds the sum over ranks (the same sums, in the same order, as reduce_scatter_sum's); the
  // rest of the range is unspecified. The buckets of the gradient reduction, issued while the
  // backward pass runs on: NCCL queues them on its own stream behind the work queued so far
  // (the kernels that wrote the range) and returns; the CPU runs them at once.
  virtual void reduce_range_to_owners(void* data, std::size_t begin, std::size_t end, std::size_t shard_count,
                                      CommType type) = 0;
  // The backend's work queued after this call waits for every reduce_range_to_owners issued so
  // far (NCCL: an event of its stream; the CPU's were complete on return).
  virtual void wait_range_reductions() {}
  // Rank 0's `all` receives every rank's `mine` (shard_count elements), rank r's at
  // r * shard_count; on the other ranks `all` is not used (null is fine). For checkpoints, which
  // rank 0 alone writes: no other rank holds the whole buffer.
  virtual void gather_to_first(const void* mine, void* all, std::size_t shard_count, CommType type) = 0;
  // Rank `root`'s `count` elements, on every rank.
  virtual void broadcast(void* data, std::size_t count, CommType type, int root) = 0;
  // Host values (flags, a few scalars) summed over ranks, in rank order; returns when every rank
  // has contributed (a synchronisation point on any device).
  virtual void all_reduce_sum_host(double* values, std::size_t count) = 0;
  void barrier();
  // This rank ends in order: its peers must not take the closing connection for a failure.
  virtual void finish() {}
};

// The CPU implementation: collectives through rank 0 over the rendezvous' connections (taken
// over from `rendezvous`), each wait bounded by its timeout.
std::unique_ptr<Communicator> make_socket_communicator(std::unique_ptr<Rendezvous> rendezvous);

}  // namespace quartet

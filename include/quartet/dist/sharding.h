// The arithmetic of a data-parallel step (docs/multi-gpu.md):
//  * which of a step's micro-batches each rank runs: the step's grad_accum micro-batches (the
//    global batch) are cut into world_size equal, contiguous runs, so N ranks see exactly the
//    sequences one rank sees, and micro-batch k draws the same random bits on any world size;
//  * how the flat parameter, gradient and moment buffers are cut into per-rank shards for the
//    sharded optimizer (ZeRO-1): equal shards, each a multiple of an alignment, the buffer
//    padded at its end to world_size shards.
#pragma once

#include <cstdint>

namespace quartet {

struct MicroBatchSlice {
  std::int64_t first = 0;  // index of this rank's first micro-batch within the step
  std::int64_t count = 0;  // how many it runs
  bool contains(std::int64_t k) const { return k >= first && k < first + count; }
};

// Throws Error when grad_accum is not a multiple of world_size (the message says how to fix it).
MicroBatchSlice micro_batch_slice(std::int64_t grad_accum, int world_size, int rank);

struct ShardLayout {
  std::int64_t elements = 0;        // the buffer's elements before padding
  std::int64_t world_size = 1;
  std::int64_t shard_elements = 0;  // per rank, a multiple of the alignment

  std::int64_t padded_elements() const { return shard_elements * world_size; }
  std::int64_t begin(std::int64_t rank) const { return rank * shard_elements; }
  std::int64_t end(std::int64_t rank) const { return begin(rank) + shard_elements; }
};

// Equal shards of at least `elements` in all: shard = round_up(ceil(elements / world), alignment).
// Throws Error for a world_size or alignment below 1 or a negative size.
ShardLayout shard_layout(std::int64_t elements, int world_size, std::int64_t alignment);

// The size a flat buffer of `elements` is padded to so that it cuts into world_size shards of a
// multiple of `alignment` each (shard_layout(...).padded_elements()).
std::int64_t padded_for_shards(std::int64_t elements, int world_size, std::int64_t alignment);

}  // namespace quartet

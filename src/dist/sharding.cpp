#include "quartet/dist/sharding.h"

#include <fmt/format.h>

#include "quartet/error.h"

namespace quartet {

MicroBatchSlice micro_batch_slice(std::int64_t grad_accum, int world_size, int rank) {
  if (world_size < 1 || rank < 0 || rank >= world_size) {
    throw Error(fmt::format("rank {} is outside a world of {} processes", rank, world_size));
  }
  if (grad_accum < 1) throw Error(fmt::format("--grad-accum must be at least 1, got {}", grad_accum));
  if (grad_accum % world_size != 0) {
    throw Error(fmt::format(
        "--grad-accum {} is not a multiple of the {} processes: a step's micro-batches (the global batch) are shared "
        "out equally, so each process runs grad-accum / processes of them; use --grad-accum {} (the same global batch "
        "on 1 to {} processes needs a multiple of each count)",
        grad_accum, world_size, (grad_accum + world_size - 1) / world_size * world_size, world_size));
  }
  const std::int64_t per_rank = grad_accum / world_size;
  return MicroBatchSlice{per_rank * rank, per_rank};
}

ShardLayout shard_layout(std::int64_t elements, int world_size, std::int64_t alignment) {
  if (world_size < 1) throw Error(fmt::format("shards: world size must be at least 1, got {}", world_size));
  if (alignment < 1) throw Error(fmt::format("shards: alignment must be at least 1, got {}", alignment));
  if (elements < 0) throw Error(fmt::format("shards: a buffer of {} elements", elements));
  ShardLayout s;
  s.elements = elements;
  s.world_size = world_size;
  const std::int64_t per_rank = (elements + world_size - 1) / world_size;
  s.shard_elements = (per_rank + alignment - 1) / alignment * alignment;
  return s;
}

std::int64_t padded_for_shards(std::int64_t elements, int world_size, std::int64_t alignment) {
  return shard_layout(elements, world_size, alignment).padded_elements();
}

}  // namespace quartet

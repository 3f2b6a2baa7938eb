// AdamW across the ranks of a data-parallel run with the optimizer state sharded (ZeRO-1):
// each rank keeps the moments of one equal shard of the flat parameter buffer (1/N of them).
// A step is
//   1. the gradients reduced in buckets as the last backward pass completes them
//      (gradient_buckets.h; the sums of one reduce-scatter): rank r gets the sum over ranks of
//      its shard;
//   2. Backend::gradient_squares over the shard, then the status slots summed over the ranks
//      (the loss, the squares, the non-finite records): every rank takes the same decision from
//      the global loss and gradient norm;
//   3. Backend::adamw_update of the shard's parameters and moments;
//   4. all-gather of the parameters (their BF16 copies are refreshed from them before the next
//      forward pass).
// With one rank this is AdamW's step bit for bit.
#pragma once

#include <memory>
#include <optional>
#include <vector>

#include "quartet/backend/backend.h"
#include "quartet/dist/communicator.h"
#include "quartet/dist/sharding.h"
#include "quartet/nn/llama.h"
#include "quartet/train/checkpoint.h"
#include "quartet/train/gradient_buckets.h"
#include "quartet/train/optimizer.h"

namespace quartet {

// The parts of `segments` inside [begin, end), with offsets relative to begin.
std::vector<ParameterSegment> segments_in_shard(const std::vector<ParameterSegment>& segments, std::int64_t begin,
                                                std::int64_t end);

// Full-size moments with one view per parameter (as AdamW::state()), e.g. to load a checkpoint
// into or to save one from. They keep their buffers alive.
struct FullAdamState {
  Tensor m, v;
  AdamState views;
};
FullAdamState make_full_adam_state(Backend& backend, LlamaModel& model);

class ShardedAdamW final : public StepOptimizer {
 public:
  // The model's flat buffers must cut into world_size equal shards of a multiple of
  // FlatParameters::kSegmentAlignment (LlamaModel's flat_multiple: world_size * alignment).
  // bucket_elements: the gradient buckets' size (gradient_bucket_elements()).
  ShardedAdamW(Backend& backend, LlamaModel& model, Communicator& comm,
               std::int64_t bucket_elements = gradient_bucket_elements());
  ShardedAdamW(const ShardedAdamW&) = delete;
  ShardedAdamW& operator=(const ShardedAdamW&) = delete;

  void step(const AdamWStep& hyper, Tensor& status) override;
  GradientsReady* gradients_ready() override { return &buckets_; }
  const GradientBuckets& buckets() const { return buckets_; }

  const ShardLayout& layout() const { return layout_; }
  // Bytes of optimizer state this rank holds (the two moment shards).
  std::size_t state_bytes() const { return m_.bytes() + v_.bytes(); }

  // Every rank's moments gathered into full buffers on rank 0, which alone writes checkpoints
  // (a collective: every rank calls it; the others return nothing and allocate nothing).
  std::optional<FullAdamState> gather_state_to_first();
  // This rank's shard taken from full moments (a resumed run: any world size wrote them).
  void load_shard(const FullAdamState& full);

 private:
  Backend& backend_;
  LlamaModel& model_;
  Communicator& comm_;
  ShardLayout layout_;
  std::vector<ParameterSegment> shard_segments_;
  Tensor m_, v_;  // this rank's shard
  GradientBuckets buckets_;
};

// A communicator for `backend`'s tensors (host memory: the CPU communicator over the
// rendezvous' connections; a GPU's: NCCL, its unique id sent over the rendezvous).
std::unique_ptr<Communicator> make_communicator(Backend& backend, std::unique_ptr<Rendezvous> rendezvous);

}  // namespace quartet

// The gradient reduction of a data-parallel step in buckets, overlapped with the backward pass
// (docs/multi-gpu.md). The flat gradient buffer is cut into contiguous buckets of whole
// backward groups (LlamaModel::backward_groups: the LM head and final norm, each block from
// the last, the embedding), about `bucket_elements` each. On the step's last micro-batch the
// model says when each group's gradients are complete; a bucket is reduced (each rank's shard
// part summed onto it: Communicator::reduce_range_to_owners) as soon as its last group is. On
// NCCL that runs on the communicator's stream while the backward pass goes on; on the CPU at
// once. Elementwise the sums are those of one reduce-scatter of the whole buffer, in the same
// order: the bucketing changes when the gradients travel, not their values.
//
// Every rank issues the same buckets in the same order (the plan depends only on the model's
// layout): complete() issues those the backward pass did not reach (a step cut short by a
// non-finite quantizer input, or no hook at all), so the ranks' collectives always pair up.
#pragma once

#include <cstdint>
#include <vector>

#include "quartet/dist/communicator.h"
#include "quartet/dist/sharding.h"
#include "quartet/nn/llama.h"

namespace quartet {

struct GradientBucket {
  std::int64_t begin = 0, end = 0;  // elements [begin, end) of the flat gradient buffer
  std::size_t last_group = 0;       // reduced once this backward group is complete
};

// The buckets of a flat buffer of `elements` whose backward groups start at `group_starts`
// (the lowest offset of each group's parameters, in backward order; strictly decreasing): group
// g covers [start_g, start_{g-1}) (group 0 up to the end of the buffer, its padding included;
// the last group down to 0), so every element is in exactly one bucket. A bucket closes after
// the group that brings it to `bucket_elements` or more. Throws Error for a layout that is not
// so ordered or a bucket size below 1.
std::vector<GradientBucket> plan_gradient_buckets(const std::vector<std::int64_t>& group_starts, std::int64_t elements,
                                                  std::int64_t bucket_elements);

// The groups' starts of `model`'s flat buffers (for plan_gradient_buckets).
std::vector<std::int64_t> backward_group_starts(const LlamaModel& model, const std::vector<ParameterSegment>& segments);

// The bucket size: QUARTET_GRAD_BUCKET_ELEMENTS when set (a whole number >= 1; Error
// otherwise), else 2^24 elements (64 MiB of FP32: large enough that NCCL runs at its bandwidth,
// small enough that the 1b preset makes about 20 buckets, one per block, that its backward pass
// overlaps).
std::int64_t gradient_bucket_elements();

class GradientBuckets final : public GradientsReady {
 public:
  // `grads` is the flat gradient buffer, cut into comm.world_size() shards of `layout`.
  GradientBuckets(std::vector<GradientBucket> plan, Tensor grads, const ShardLayout& layout, Communicator& comm);

  // From the model's backward pass: issues every bucket whose last group is `group`.
  void ready(std::size_t group) override;
  // Issues the buckets not issued yet (in plan order), and orders the backend's following work
  // after all of them; then the next step starts from the first bucket again.
  void complete();

  const std::vector<GradientBucket>& plan() const { return plan_; }

 private:
  void issue(const GradientBucket& b);

  std::vector<GradientBucket> plan_;
  Tensor grads_;
  ShardLayout layout_;
  Communicator& comm_;
  std::size_t next_ = 0;  // the first bucket not issued in this step
};

}  // namespace quartet

#include "quartet/train/sharded_optimizer.h"

#include <fmt/format.h>

#include <algorithm>
#include <utility>

#include "quartet/dist/nccl.h"
#include "quartet/dist/rendezvous.h"
#include "quartet/error.h"

namespace quartet {

std::vector<ParameterSegment> segments_in_shard(const std::vector<ParameterSegment>& segments, std::int64_t begin,
                                                std::int64_t end) {
  std::vector<ParameterSegment> out;
  for (const ParameterSegment& s : segments) {
    const std::int64_t lo = std::max(s.offset, begin), hi = std::min(s.offset + s.count, end);
    if (lo < hi) out.push_back(ParameterSegment{lo - begin, hi - lo, s.decay});
  }
  return out;
}

FullAdamState make_full_adam_state(Backend& backend, LlamaModel& model) {
  const FlatParameters& flat = model.flat();
  FullAdamState full;
  full.m = backend.zeros(flat.values.shape(), flat.values.dtype());
  full.v = backend.zeros(flat.values.shape(), flat.values.dtype());
  const std::vector<Parameter>& params = std::as_const(model).parameters();
  for (std::size_t i = 0; i < params.size(); ++i) {
    const ParameterSegment& seg = flat.segments[i];
    full.views.m.push_back(full.m.view(seg.offset, params[i].value.shape()));
    full.views.v.push_back(full.v.view(seg.offset, params[i].value.shape()));
  }
  return full;
}

namespace {

CommType comm_type(DType t) {
  switch (t) {
    case DType::f32: return CommType::f32;
    case DType::f64: return CommType::f64;
    case DType::bf16: return CommType::bf16;
    case DType::u8: return CommType::u8;
    default: throw Error(fmt::format("no collective over {} elements", dtype_name(t)));
  }
}

}  // namespace

namespace {

ShardLayout checked_layout(LlamaModel& model, Communicator& comm) {
  const FlatParameters& flat = model.flat();
  const std::int64_t n = flat.values.numel();
  const ShardLayout layout = shard_layout(n, comm.world_size(), FlatParameters::kSegmentAlignment);
  if (layout.padded_elements() != n) {
    throw Error(fmt::format("sharded optimizer: the flat buffers' {} elements do not cut into {} equal shards of a "
                            "multiple of {} (build the model with flat_multiple {})",
                            n, comm.world_size(), FlatParameters::kSegmentAlignment,
                            comm.world_size() * FlatParameters::kSegmentAlignment));
  }
  return layout;
}

}  // namespace

ShardedAdamW::ShardedAdamW(Backend& backend, LlamaModel& model, Communicator& comm, std::int64_t bucket_elements)
    : backend_(backend),
      model_(model),
      comm_(comm),
      layout_(checked_layout(model, comm)),
      buckets_(plan_gradient_buckets(backward_group_starts(model, model.flat().segments), layout_.padded_elements(),
                                     bucket_elements),
               model.flat().grads, layout_, comm) {
  const FlatParameters& flat = model.flat();
  shard_segments_ = segments_in_shard(flat.segments, layout_.begin(comm.rank()), layout_.end(comm.rank()));
  m_ = backend.zeros({layout_.shard_elements}, flat.values.dtype());
  v_ = backend.zeros({layout_.shard_elements}, flat.values.dtype());
}

void ShardedAdamW::step(const AdamWStep& hyper, Tensor& status) {
  FlatParameters& flat = model_.flat();
  const std::int64_t begin = layout_.begin(comm_.rank()), count = layout_.shard_elements;
  const auto shard_count = static_cast<std::size_t>(count);
  // The buckets the last backward pass did not issue, then the update waits for all of them.
  buckets_.complete();
  Tensor grads = flat.grads.view(begin, {count});
  Tensor values = flat.values.view(begin, {count});
  Tensor values_bf16 = flat.values_bf16.view(begin, {count});
  backend_.gradient_squares(grads, shard_segments_, status);
  // The loss, the squares and the non-finite records of every rank (the other slots are 0).
  comm_.all_reduce_sum(status.raw(), static_cast<std::size_t>(status.numel()), CommType::f64);
  backend_.adamw_update(values, values_bf16, grads, m_, v_, shard_segments_, hyper, status);
  if (comm_.world_size() == 1) {
    model_.bf16_weights_written();  // the update wrote every BF16 copy
    return;
  }
  comm_.all_gather(flat.values.raw(), shard_count, comm_type(flat.values.dtype()));
  // Other ranks' shards arrived as FP32 only: the BF16 copies are refreshed before the next
  // forward pass (the same rounding as the update's, so the same bits).
  model_.weights_changed();
}

std::optional<FullAdamState> ShardedAdamW::gather_state_to_first() {
  std::optional<FullAdamState> full;
  if (comm_.rank() == 0) full = make_full_adam_state(backend_, model_);
  const auto count = static_cast<std::size_t>(layout_.shard_elements);
  const CommType type = comm_type(m_.dtype());
  comm_.gather_to_first(m_.raw(), full ? full->m.raw() : nullptr, count, type);
  comm_.gather_to_first(v_.raw(), full ? full->v.raw() : nullptr, count, type);
  return full;
}

void ShardedAdamW::load_shard(const FullAdamState& full) {
  const std::int64_t begin = layout_.begin(comm_.rank()), count = layout_.shard_elements;
  backend_.copy(m_, full.m.view(begin, {count}));
  backend_.copy(v_, full.v.view(begin, {count}));
}

std::unique_ptr<Communicator> make_communicator(Backend& backend, std::unique_ptr<Rendezvous> rendezvous) {
  if (backend.device() == Device::cpu) return make_socket_communicator(std::move(rendezvous));
  return make_nccl_communicator(backend, std::move(rendezvous));
}

}  // namespace quartet

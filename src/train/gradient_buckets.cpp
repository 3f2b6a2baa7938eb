#include "quartet/train/gradient_buckets.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <string>

#include "quartet/error.h"

namespace quartet {

std::vector<GradientBucket> plan_gradient_buckets(const std::vector<std::int64_t>& group_starts, std::int64_t elements,
                                                  std::int64_t bucket_elements) {
  if (bucket_elements < 1) throw Error(fmt::format("gradient buckets of {} elements: must be 1 or more", bucket_elements));
  if (group_starts.empty()) throw Error("gradient buckets: the model has no backward groups");
  for (std::size_t g = 0; g < group_starts.size(); ++g) {
    const std::int64_t above = g == 0 ? elements : group_starts[g - 1];
    if (group_starts[g] < 0 || group_starts[g] >= above) {
      throw Error(fmt::format("gradient buckets: backward group {} starts at element {}, not below {} (the groups must "
                              "walk the flat buffer from its end to its start)",
                              g, group_starts[g], above));
    }
  }
  std::vector<GradientBucket> plan;
  std::int64_t bucket_end = elements;
  for (std::size_t g = 0; g < group_starts.size(); ++g) {
    const bool last = g + 1 == group_starts.size();
    const std::int64_t begin = last ? 0 : group_starts[g];
    if (bucket_end - begin >= bucket_elements || last) {
      plan.push_back(GradientBucket{begin, bucket_end, g});
      bucket_end = begin;
    }
  }
  return plan;
}

std::vector<std::int64_t> backward_group_starts(const LlamaModel& model, const std::vector<ParameterSegment>& segments) {
  std::vector<std::int64_t> starts;
  for (const std::vector<std::size_t>& group : model.backward_groups()) {
    std::int64_t lo = -1;
    for (std::size_t i : group) {
      const std::int64_t offset = segments.at(i).offset;
      lo = lo < 0 ? offset : std::min(lo, offset);
    }
    starts.push_back(lo);
  }
  return starts;
}

std::int64_t gradient_bucket_elements() {
  const char* v = std::getenv("QUARTET_GRAD_BUCKET_ELEMENTS");
  if (v == nullptr) return std::int64_t{1} << 24;
  const std::string s(v);
  std::size_t used = 0;
  long long n = 0;
  try {
    n = std::stoll(s, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != s.size() || n < 1) {
    throw Error(fmt::format("QUARTET_GRAD_BUCKET_ELEMENTS='{}' must be a whole number of elements >= 1", s));
  }
  return n;
}

GradientBuckets::GradientBuckets(std::vector<GradientBucket> plan, Tensor grads, const ShardLayout& layout,
                                 Communicator& comm)
    : plan_(std::move(plan)), grads_(std::move(grads)), layout_(layout), comm_(comm) {
  if (grads_.numel() != layout_.padded_elements()) {
    throw Error(fmt::format("gradient buckets: a buffer of {} elements for {} shards of {}", grads_.numel(),
                            layout_.world_size, layout_.shard_elements));
  }
  if (grads_.dtype() != DType::f32 && grads_.dtype() != DType::f64) {
    throw Error(fmt::format("gradient buckets: sums over {} gradients", dtype_name(grads_.dtype())));
  }
}

void GradientBuckets::issue(const GradientBucket& b) {
  comm_.reduce_range_to_owners(grads_.raw(), static_cast<std::size_t>(b.begin), static_cast<std::size_t>(b.end),
                               static_cast<std::size_t>(layout_.shard_elements),
                               grads_.dtype() == DType::f32 ? CommType::f32 : CommType::f64);
}

void GradientBuckets::ready(std::size_t group) {
  while (next_ < plan_.size() && plan_[next_].last_group <= group) issue(plan_[next_++]);
}

void GradientBuckets::complete() {
  while (next_ < plan_.size()) issue(plan_[next_++]);
  comm_.wait_range_reductions();
  next_ = 0;
}

}  // namespace quartet

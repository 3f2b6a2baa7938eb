// The plan of the gradient buckets and the order they are issued in (gradient_buckets.h), with
// a communicator that records the calls: every element in exactly one bucket, buckets issued as
// soon as their last backward group is complete and in plan order, the rest issued (and waited
// for) by complete(), every step the same sequence.
#include "quartet/train/gradient_buckets.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "quartet/error.h"

namespace quartet {
namespace {

TEST(GradientBuckets, PlanCoversTheBufferOnceInBackwardOrder) {
  // Groups start at 900 (head + norm), 600, 300 (blocks), 100 (embedding); 1000 elements.
  const std::vector<std::int64_t> starts = {900, 600, 300, 100};
  const auto plan = plan_gradient_buckets(starts, 1000, 350);
  ASSERT_EQ(plan.size(), 2u);
  EXPECT_EQ(plan[0].begin, 600);  // 100 + 300 elements: the first bucket closes after group 1
  EXPECT_EQ(plan[0].end, 1000);
  EXPECT_EQ(plan[0].last_group, 1u);
  EXPECT_EQ(plan[1].begin, 0);    // the last bucket reaches down to element 0
  EXPECT_EQ(plan[1].end, 600);
  EXPECT_EQ(plan[1].last_group, 3u);
  // One bucket per group when the size is small; one in all when it is large.
  const auto each = plan_gradient_buckets(starts, 1000, 1);
  ASSERT_EQ(each.size(), 4u);
  for (std::size_t g = 0; g < 4; ++g) EXPECT_EQ(each[g].last_group, g);
  const auto one = plan_gradient_buckets(starts, 1000, 1 << 30);
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(one[0].begin, 0);
  EXPECT_EQ(one[0].end, 1000);
}

TEST(GradientBuckets, BadLayoutsAndSizesAreRefused) {
  EXPECT_THROW(plan_gradient_buckets({900, 600}, 1000, 0), Error);
  EXPECT_THROW(plan_gradient_buckets({}, 1000, 10), Error);
  try {
    plan_gradient_buckets({900, 950, 100}, 1000, 10);
    ADD_FAILURE() << "a group above the one before it was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("backward group 1 starts at element 950, not below 900"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(plan_gradient_buckets({1000, 100}, 1000, 10), Error);  // past the end
}

TEST(GradientBuckets, SizeComesFromTheEnvironmentAndBadValuesAreNamed) {
  ::unsetenv("QUARTET_GRAD_BUCKET_ELEMENTS");
  EXPECT_EQ(gradient_bucket_elements(), std::int64_t{1} << 24);
  ::setenv("QUARTET_GRAD_BUCKET_ELEMENTS", "4096", 1);
  EXPECT_EQ(gradient_bucket_elements(), 4096);
  for (const char* bad : {"0", "-5", "12k", "", "1e6"}) {
    ::setenv("QUARTET_GRAD_BUCKET_ELEMENTS", bad, 1);
    try {
      gradient_bucket_elements();
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(std::string("QUARTET_GRAD_BUCKET_ELEMENTS='") + bad + "'"),
                std::string::npos)
          << e.what();
    }
  }
  ::unsetenv("QUARTET_GRAD_BUCKET_ELEMENTS");
}

// Records the range reductions and waits; everything else is not used by the buckets.
class Recorder final : public Communicator {
 public:
  std::vector<std::string> calls;
  int rank() const override { return 1; }
  int world_size() const override { return 2; }
  std::string name() const override { return "recorder"; }
  void all_reduce_sum(void*, std::size_t, CommType) override { calls.push_back("all_reduce"); }
  void reduce_scatter_sum(void*, std::size_t, CommType) override { calls.push_back("reduce_scatter"); }
  void reduce_range_to_owners(void*, std::size_t begin, std::size_t end, std::size_t shard, CommType type) override {
    calls.push_back("range " + std::to_string(begin) + "-" + std::to_string(end) + " shard " + std::to_string(shard) +
                    " " + comm_type_name(type));
  }
  void wait_range_reductions() override { calls.push_back("wait"); }
  void gather_to_first(const void*, void*, std::size_t, CommType) override { calls.push_back("gather"); }
  void all_gather(void*, std::size_t, CommType) override { calls.push_back("all_gather"); }
  void broadcast(void*, std::size_t, CommType, int) override { calls.push_back("broadcast"); }
  void all_reduce_sum_host(double*, std::size_t) override { calls.push_back("host"); }
};

TEST(GradientBuckets, IssuedAsTheirGroupsCompleteAndTheRestByComplete) {
  auto be = make_cpu_backend();
  Tensor grads = be->zeros({1024}, DType::f32);
  const ShardLayout layout = shard_layout(1024, 2, 64);
  Recorder comm;
  GradientBuckets buckets(plan_gradient_buckets({900, 600, 300, 100}, 1024, 350), grads, layout, comm);
  buckets.ready(0);
  EXPECT_TRUE(comm.calls.empty()) << "bucket 0 ends with group 1";
  buckets.ready(1);
  ASSERT_EQ(comm.calls.size(), 1u);
  EXPECT_EQ(comm.calls[0], "range 600-1024 shard 512 f32");
  buckets.ready(2);
  EXPECT_EQ(comm.calls.size(), 1u);
  buckets.complete();  // the pass stopped before group 3 (a non-finite input): issued here
  EXPECT_EQ(comm.calls, (std::vector<std::string>{"range 600-1024 shard 512 f32", "range 0-600 shard 512 f32", "wait"}));
  // The next step starts again from the first bucket; a step without the hook issues all.
  comm.calls.clear();
  buckets.complete();
  EXPECT_EQ(comm.calls, (std::vector<std::string>{"range 600-1024 shard 512 f32", "range 0-600 shard 512 f32", "wait"}));
  comm.calls.clear();
  for (std::size_t g = 0; g < 4; ++g) buckets.ready(g);
  buckets.complete();
  EXPECT_EQ(comm.calls, (std::vector<std::string>{"range 600-1024 shard 512 f32", "range 0-600 shard 512 f32", "wait"}));
  // A buffer that is not the layout's.
  EXPECT_THROW(GradientBuckets(buckets.plan(), be->zeros({1000}, DType::f32), layout, comm), Error);
}

}  // namespace
}  // namespace quartet

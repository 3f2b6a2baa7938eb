#include <gtest/gtest.h>

#include "quartet/dist/sharding.h"
#include "quartet/error.h"

namespace quartet {
namespace {

TEST(MicroBatchSlice, RanksShareTheStepsMicroBatchesInOrder) {
  // 8 micro-batches on 1, 2, 4, 8 ranks: every micro-batch is run by exactly one rank.
  for (int world : {1, 2, 4, 8}) {
    std::vector<int> owner(8, -1);
    for (int r = 0; r < world; ++r) {
      const MicroBatchSlice s = micro_batch_slice(8, world, r);
      EXPECT_EQ(s.count, 8 / world);
      for (std::int64_t k = s.first; k < s.first + s.count; ++k) {
        EXPECT_EQ(owner[static_cast<std::size_t>(k)], -1);
        owner[static_cast<std::size_t>(k)] = r;
      }
    }
    for (int k = 0; k < 8; ++k) EXPECT_EQ(owner[static_cast<std::size_t>(k)], k / (8 / world)) << world;
  }
}

TEST(MicroBatchSlice, GradAccumNotAMultipleOfTheWorldIsRefusedWithAFix) {
  try {
    micro_batch_slice(3, 2, 0);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--grad-accum 3 is not a multiple of the 2 processes"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("use --grad-accum 4"), std::string::npos) << e.what();
  }
  EXPECT_THROW(micro_batch_slice(4, 2, 2), Error);
  EXPECT_THROW(micro_batch_slice(0, 1, 0), Error);
}

TEST(ShardLayout, EqualAlignedShardsCoverTheBuffer) {
  const ShardLayout s = shard_layout(1000, 3, 64);
  EXPECT_EQ(s.shard_elements, 384);  // ceil(1000 / 3) = 334 -> 384
  EXPECT_EQ(s.padded_elements(), 1152);
  EXPECT_EQ(s.begin(0), 0);
  EXPECT_EQ(s.end(0), 384);
  EXPECT_EQ(s.begin(2), 768);
  EXPECT_EQ(s.end(2), 1152);
  // One rank: the buffer itself (aligned sizes stay as they are).
  EXPECT_EQ(shard_layout(640, 1, 64).padded_elements(), 640);
  EXPECT_EQ(padded_for_shards(640, 8, 64), 1024);
  // A padded buffer cuts without further padding.
  EXPECT_EQ(padded_for_shards(padded_for_shards(123457, 8, 64), 8, 64), padded_for_shards(123457, 8, 64));
  EXPECT_EQ(shard_layout(0, 4, 64).padded_elements(), 0);
  EXPECT_THROW(shard_layout(10, 0, 64), Error);
  EXPECT_THROW(shard_layout(10, 2, 0), Error);
}

TEST(ShardLayout, OptimizerMemoryPerRankIsAboutOneOverN) {
  // The ~1B preset's flat buffer is ~1.2e9 elements: padding adds at most alignment * N.
  const std::int64_t n = 1'234'567'890;
  for (int world : {2, 4, 8}) {
    const ShardLayout s = shard_layout(n, world, 64);
    EXPECT_LE(static_cast<double>(s.shard_elements), static_cast<double>(n) / world * 1.05);
  }
}

}  // namespace
}  // namespace quartet

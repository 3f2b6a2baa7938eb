#include "quartet/util/parallel_for.h"

#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>
#include <string>
#include <vector>

namespace quartet {
namespace {

TEST(ParallelFor, RunsEveryItemOnceOnEveryThreadCount) {
  for (int threads : {1, 2, 7}) {
    std::vector<std::atomic<int>> runs(1000);
    std::atomic<int> bad_worker{0};
    std::vector<std::size_t> reported;
    parallel_for(
        runs.size(), threads,
        [&](std::size_t i, int worker) {
          runs[i].fetch_add(1);
          if (worker < 0 || worker >= threads) bad_worker.fetch_add(1);
        },
        [&](std::size_t done) { reported.push_back(done); });
    for (std::size_t i = 0; i < runs.size(); ++i) ASSERT_EQ(runs[i].load(), 1) << "item " << i << ", " << threads << " threads";
    EXPECT_EQ(bad_worker.load(), 0);
    ASSERT_FALSE(reported.empty());
    EXPECT_EQ(reported.back(), runs.size()) << "the last progress call reports every item done";
  }
}

TEST(ParallelFor, NoItemsIsFine) {
  int calls = 0;
  parallel_for(0, 4, [&](std::size_t, int) { ++calls; });
  EXPECT_EQ(calls, 0);
}

// The error a user sees is the first failing item's, whatever the threads' timing.
TEST(ParallelFor, RethrowsTheLowestFailingItemsError) {
  for (int threads : {1, 3, 8}) {
    try {
      parallel_for(200, threads, [](std::size_t i, int) {
        if (i == 17 || i == 18 || i == 150) throw std::runtime_error("item " + std::to_string(i));
      });
      FAIL() << "no exception with " << threads << " threads";
    } catch (const std::runtime_error& e) {
      // Items are handed out in order, so item 17 has started before 18 or 150 can fail, and
      // it fails whatever happens elsewhere.
      EXPECT_EQ(std::string(e.what()), "item 17") << threads << " threads";
    }
  }
}

}  // namespace
}  // namespace quartet

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <vector>

#include "quartet/data/dataset.h"

namespace quartet {
namespace {

TEST(SeededPermutation, IsAPermutationAndDependsOnlyOnTheSeed) {
  for (std::size_t n : {0u, 1u, 2u, 17u, 1000u}) {
    std::vector<std::size_t> p = seeded_permutation(n, 7);
    EXPECT_EQ(p, seeded_permutation(n, 7));
    std::sort(p.begin(), p.end());
    for (std::size_t i = 0; i < n; ++i) ASSERT_EQ(p[i], i) << "n " << n;
  }
  EXPECT_NE(seeded_permutation(1000, 1), seeded_permutation(1000, 2));
}

// Every order of 4 items is equally likely: over 24,000 seeds each of the 24 orders is expected
// 1,000 times. Pearson's statistic has 23 degrees of freedom (mean 23, sd 6.8); 60 is beyond its
// 99.99th percentile (about 59), so a fair shuffle would fail with these seeds with probability
// about 10^-4, while a biased one (e.g. the naive shuffle that draws from [0, n) at every step,
// whose orders' counts differ by up to 2x) exceeds it by far.
TEST(SeededPermutation, EveryOrderIsEquallyLikely) {
  std::map<std::vector<std::size_t>, int> counts;
  constexpr int kSeeds = 24000;
  for (int seed = 0; seed < kSeeds; ++seed) ++counts[seeded_permutation(4, static_cast<std::uint64_t>(seed))];
  ASSERT_EQ(counts.size(), 24u);
  double chi2 = 0;
  for (const auto& [order, count] : counts) chi2 += (count - 1000.0) * (count - 1000.0) / 1000.0;
  EXPECT_LT(chi2, 60.0);
}

}  // namespace
}  // namespace quartet

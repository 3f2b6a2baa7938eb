// Our Philox4x32-10 against cuRAND's own header-only implementation (curand_philox4x32_x.h,
// shipped with the CUDA toolkit), compiled here for the host.
#include <gtest/gtest.h>

#include <random>

#include "quartet/numerics/philox.h"

#if defined(QUARTET_HAVE_CURAND_HEADERS)
#define QUALIFIERS static inline
#include <vector_types.h>
#include <curand_philox4x32_x.h>
#endif

namespace quartet {
namespace {

TEST(PhiloxCurandOracle, MatchesCurandOnRandomCountersAndKeys) {
#if !defined(QUARTET_HAVE_CURAND_HEADERS)
  GTEST_SKIP() << "no CUDA toolkit found at configure time: cuRAND's Philox header is unavailable";
#else
  std::mt19937_64 gen(2026);
  for (int i = 0; i < 100000; ++i) {
    const std::uint64_t a = gen(), b = gen(), key = gen();
    const PhiloxWords c{static_cast<std::uint32_t>(a), static_cast<std::uint32_t>(a >> 32),
                        static_cast<std::uint32_t>(b), static_cast<std::uint32_t>(b >> 32)};
    const PhiloxWords ours = philox4x32_10(c, static_cast<std::uint32_t>(key), static_cast<std::uint32_t>(key >> 32));
    uint4 counter;
    counter.x = c.x, counter.y = c.y, counter.z = c.z, counter.w = c.w;
    uint2 k;
    k.x = static_cast<unsigned>(key), k.y = static_cast<unsigned>(key >> 32);
    const uint4 theirs = curand_Philox4x32_10(counter, k);
    ASSERT_EQ(ours.x, theirs.x) << i;
    ASSERT_EQ(ours.y, theirs.y) << i;
    ASSERT_EQ(ours.z, theirs.z) << i;
    ASSERT_EQ(ours.w, theirs.w) << i;
  }
#endif
}

}  // namespace
}  // namespace quartet

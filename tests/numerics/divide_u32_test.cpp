#include "quartet/numerics/divide_u32.h"

#include <gtest/gtest.h>

#include <random>

namespace quartet {
namespace {

// Against the hardware division: every divisor up to 2^12 on the numerators where an error
// would show first (around multiples of d and at the top of the range), then random pairs.
TEST(DivideU32, MatchesIntegerDivision) {
  std::int64_t wrong = 0;
  for (std::uint32_t d = 1; d <= 4096; ++d) {
    const DivideU32 div = DivideU32::by(d);
    for (std::uint32_t n : {0u, 1u, d - 1, d, d + 1, 2 * d - 1, 2 * d, 0xFFFFFFFFu, 0xFFFFFFFFu - d, 0x80000000u,
                            (0xFFFFFFFFu / d) * d, (0xFFFFFFFFu / d) * d - 1}) {
      wrong += div.divide(n) != n / d;
    }
  }
  std::mt19937_64 gen(5);
  for (int i = 0; i < 2000000; ++i) {
    const std::uint32_t d = static_cast<std::uint32_t>(gen() >> (33 + gen() % 31)) | 1u;
    const std::uint32_t n = static_cast<std::uint32_t>(gen());
    wrong += DivideU32::by(d).divide(n) != n / d;
  }
  for (std::uint32_t d : {0x7FFFFFFFu, 0x80000000u, 0x80000001u, 0xFFFFFFFEu, 0xFFFFFFFFu}) {
    for (std::uint32_t n : {0u, d - 1, d, 0xFFFFFFFFu}) wrong += DivideU32::by(d).divide(n) != n / d;
  }
  EXPECT_EQ(wrong, 0);
  EXPECT_THROW(DivideU32::by(0), std::invalid_argument);
}

}  // namespace
}  // namespace quartet

// The helpers every untrusted size goes through (include/quartet/util/checked.h).
#include "quartet/util/checked.h"
#include "support/error_of.h"

#include <gtest/gtest.h>

#include <limits>
#include <string>

namespace quartet {
namespace {

constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max();
constexpr std::int64_t kMin = std::numeric_limits<std::int64_t>::min();

using quartet::testing::error_of;

TEST(Checked, MulAndAddReturnExactResults) {
  EXPECT_EQ(checked_mul(3'000'000'000, 3, "x"), 9'000'000'000);
  EXPECT_EQ(checked_mul(-4, 5, "x"), -20);
  EXPECT_EQ(checked_add(kMax - 1, 1, "x"), kMax);
  EXPECT_EQ(checked_add(kMin, 0, "x"), kMin);
  EXPECT_EQ(checked_product("x", 2, 3, 5, 7), 210);
}

TEST(Checked, OverflowsNameTheQuantity) {
  EXPECT_EQ(error_of([] { checked_mul(kMax / 2 + 1, 2, "tensor bytes"); }),
            "tensor bytes overflows: 4611686018427387904 x 2");
  EXPECT_EQ(error_of([] { checked_add(kMax, 1, "offset"); }), "offset overflows: 9223372036854775807 + 1");
  EXPECT_THROW(checked_add(kMin, -1, "x"), Error);
  EXPECT_THROW(checked_mul(kMin, -1, "x"), Error);
  // The product overflows at its third factor, though every pair fits.
  EXPECT_NE(error_of([] { checked_product("shape", 1 << 30, 1 << 30, 1 << 30); }).find("shape overflows"),
            std::string::npos);
}

TEST(Checked, IntegerAcceptsWholeNumbersInRange) {
  EXPECT_EQ(checked_integer(42.0, 0, 100, "n"), 42);
  EXPECT_EQ(checked_integer(-3.0, -5, 5, "n"), -3);
  EXPECT_EQ(checked_integer(0x1p62, 0, kMax, "n"), std::int64_t{1} << 62);
  EXPECT_EQ(checked_integer(-0x1p63, kMin, 0, "n"), kMin);
}

TEST(Checked, IntegerRefusesFractionsNonFiniteAndOutOfRange) {
  EXPECT_EQ(error_of([] { checked_integer(1.5, 0, 10, "--steps"); }), "--steps must be an integer in [0, 10], got 1.5");
  EXPECT_THROW(checked_integer(11.0, 0, 10, "n"), Error);
  EXPECT_THROW(checked_integer(-1.0, 0, 10, "n"), Error);
  EXPECT_THROW(checked_integer(std::numeric_limits<double>::quiet_NaN(), 0, 10, "n"), Error);
  EXPECT_THROW(checked_integer(std::numeric_limits<double>::infinity(), 0, kMax, "n"), Error);
  EXPECT_THROW(checked_integer(-std::numeric_limits<double>::infinity(), kMin, 0, "n"), Error);
  EXPECT_THROW(checked_integer(1e300, 0, kMax, "n"), Error);
}

// Regression: INT64_MAX rounds to 2^63 as a double, so 2^63 passed the range check and was then
// converted to int64 (undefined; on x86-64 it came back as INT64_MIN).
TEST(Checked, IntegerRefusesTwoToThe63rdAgainstAnInt64MaxBound) {
  EXPECT_THROW(checked_integer(0x1p63, 0, kMax, "n"), Error);
  EXPECT_THROW(checked_integer(0x1p63, kMin, kMax, "n"), Error);
  EXPECT_THROW(checked_integer(-0x1p64, kMin, kMax, "n"), Error);
}

// Regression: a bound just under 2^63 also rounds up as a double; a value between the bound
// and 2^63 passed and was returned above the bound.
TEST(Checked, IntegerHonoursBoundsThatDoublesCannotRepresent) {
  // Doubles near 2^63 are 1024 apart: hi = 2^63 - 1124 rounds up to 2^63 - 1024.
  const std::int64_t hi = kMax - 1123;
  const double above = 0x1p63 - 1024.0;
  ASSERT_EQ(static_cast<double>(hi), above);
  ASSERT_GT(static_cast<std::int64_t>(above), hi);
  EXPECT_THROW(checked_integer(above, 0, hi, "n"), Error);
}

TEST(Checked, RangeNeverClamps) {
  EXPECT_EQ(checked_range(5, 1, 5, "--batch"), 5);
  EXPECT_EQ(error_of([] { checked_range(0, 1, 5, "--batch"); }), "--batch must be in [1, 5], got 0");
  EXPECT_THROW(checked_range(6, 1, 5, "--batch"), Error);
}

}  // namespace
}  // namespace quartet

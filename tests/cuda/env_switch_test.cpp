// The environment switches between implementations (env_switch.h): no GPU needed, so these run
// in CI too.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "backend/cuda/env_switch.h"
#include "quartet/error.h"

namespace quartet::cuda {
namespace {

constexpr const char* kVariable = "QUARTET_TEST_SWITCH";

std::string error_of(const auto& call) {
  try {
    call();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

class EnvSwitch : public ::testing::Test {
 protected:
  void TearDown() override { unsetenv(kVariable); }
};

TEST_F(EnvSwitch, UnsetOrEmptyTakesTheFirstValue) {
  unsetenv(kVariable);
  EXPECT_EQ(env_choice(kVariable, {"split", "fused", "wgmma"}), 0);
  EXPECT_TRUE(env_keeps_usual(kVariable, "copies", "fp4-operand"));
  setenv(kVariable, "", 1);
  EXPECT_EQ(env_choice(kVariable, {"split", "fused", "wgmma"}), 0);
  EXPECT_TRUE(env_keeps_usual(kVariable, "copies", "fp4-operand"));
}

TEST_F(EnvSwitch, EachValueGivesItsIndex) {
  for (const auto& [value, index] : {std::pair{"split", 0}, std::pair{"fused", 1}, std::pair{"wgmma", 2}}) {
    setenv(kVariable, value, 1);
    EXPECT_EQ(env_choice(kVariable, {"split", "fused", "wgmma"}), index) << value;
  }
  setenv(kVariable, "copies", 1);
  EXPECT_TRUE(env_keeps_usual(kVariable, "copies", "fp4-operand"));
  setenv(kVariable, "fp4-operand", 1);
  EXPECT_FALSE(env_keeps_usual(kVariable, "copies", "fp4-operand"));
}

TEST_F(EnvSwitch, AnythingElseIsAnErrorNamingEveryValue) {
  setenv(kVariable, "atomic", 1);
  EXPECT_EQ(error_of([] { env_choice(kVariable, {"split", "fused", "wgmma"}); }),
            "QUARTET_TEST_SWITCH must be one of \"split\", \"fused\", \"wgmma\", got \"atomic\"");
  EXPECT_EQ(error_of([] { env_keeps_usual(kVariable, "copies", "fp4-operand"); }),
            "QUARTET_TEST_SWITCH must be \"copies\" or \"fp4-operand\", got \"atomic\"");
  setenv(kVariable, "Split", 1);  // values are case-sensitive
  EXPECT_NE(error_of([] { env_choice(kVariable, {"split", "fused", "wgmma"}); }), "(no error)");
}

}  // namespace
}  // namespace quartet::cuda

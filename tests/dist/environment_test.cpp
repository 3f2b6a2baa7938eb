#include <gtest/gtest.h>

#include <map>

#include "quartet/dist/environment.h"
#include "quartet/error.h"

namespace quartet {
namespace {

std::optional<DistEnvironment> read(const std::map<std::string, std::string>& vars) {
  return read_dist_environment([&](const std::string& name) -> std::optional<std::string> {
    const auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  });
}

std::string error_of(const std::map<std::string, std::string>& vars) {
  try {
    read(vars);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(DistEnvironment, NoVariablesIsASingleProcessRun) {
  EXPECT_FALSE(read({}).has_value());
  // The rendezvous address alone does not make a run distributed (a shell may export it).
  EXPECT_FALSE(read({{"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", "29500"}}).has_value());
}

TEST(DistEnvironment, ReadsTorchrunVariables) {
  const auto env = read({{"RANK", "5"},
                         {"WORLD_SIZE", "8"},
                         {"LOCAL_RANK", "1"},
                         {"LOCAL_WORLD_SIZE", "4"},
                         {"MASTER_ADDR", "node0"},
                         {"MASTER_PORT", "29500"}});
  ASSERT_TRUE(env.has_value());
  EXPECT_EQ(env->rank, 5);
  EXPECT_EQ(env->world_size, 8);
  EXPECT_EQ(env->local_rank, 1);
  EXPECT_EQ(env->local_world_size, 4);
  EXPECT_EQ(env->endpoint(), "node0:29500");
}

TEST(DistEnvironment, WorldSizeOneNeedsNoAddress) {
  const auto env = read({{"RANK", "0"}, {"WORLD_SIZE", "1"}, {"LOCAL_RANK", "0"}});
  ASSERT_TRUE(env.has_value());
  EXPECT_EQ(env->world_size, 1);
  EXPECT_EQ(env->local_world_size, 1);
}

TEST(DistEnvironment, Ipv6EndpointIsBracketed) {
  const auto env = read({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"LOCAL_RANK", "0"}, {"MASTER_ADDR", "::1"},
                         {"MASTER_PORT", "80"}});
  EXPECT_EQ(env->endpoint(), "[::1]:80");
}

TEST(DistEnvironment, BadValuesNameTheVariable) {
  const std::map<std::string, std::string> good = {{"RANK", "1"},        {"WORLD_SIZE", "2"},
                                                   {"LOCAL_RANK", "1"},  {"MASTER_ADDR", "127.0.0.1"},
                                                   {"MASTER_PORT", "29500"}};
  const auto with = [&](const std::string& k, const std::string& v) {
    auto m = good;
    m[k] = v;
    return m;
  };
  const auto without = [&](const std::string& k) {
    auto m = good;
    m.erase(k);
    return m;
  };
  EXPECT_NE(error_of(without("RANK")).find("RANK is not set"), std::string::npos) << error_of(without("RANK"));
  EXPECT_NE(error_of(without("WORLD_SIZE")).find("WORLD_SIZE is not set"), std::string::npos);
  EXPECT_NE(error_of(without("LOCAL_RANK")).find("SLURM_LOCALID"), std::string::npos);
  EXPECT_NE(error_of(without("MASTER_ADDR")).find("MASTER_ADDR is not set"), std::string::npos);
  EXPECT_NE(error_of(without("MASTER_PORT")).find("MASTER_PORT is not set"), std::string::npos);
  EXPECT_NE(error_of(with("RANK", "2")).find("RANK='2' is not valid: expected a rank in 0..1"), std::string::npos)
      << error_of(with("RANK", "2"));
  EXPECT_NE(error_of(with("RANK", "-1")).find("RANK='-1'"), std::string::npos);
  EXPECT_NE(error_of(with("RANK", "1x")).find("RANK='1x'"), std::string::npos);
  EXPECT_NE(error_of(with("RANK", "")).find("RANK=''"), std::string::npos);
  EXPECT_NE(error_of(with("WORLD_SIZE", "0")).find("WORLD_SIZE='0'"), std::string::npos);
  EXPECT_NE(error_of(with("WORLD_SIZE", "two")).find("WORLD_SIZE='two'"), std::string::npos);
  EXPECT_NE(error_of(with("LOCAL_RANK", "2")).find("LOCAL_RANK='2'"), std::string::npos);
  EXPECT_NE(error_of(with("MASTER_PORT", "0")).find("MASTER_PORT='0' is not valid: expected a TCP port"),
            std::string::npos);
  EXPECT_NE(error_of(with("MASTER_PORT", "65536")).find("MASTER_PORT='65536'"), std::string::npos);
  EXPECT_NE(error_of(with("MASTER_ADDR", "")).find("MASTER_ADDR is not set"), std::string::npos);
  auto local = good;
  local["LOCAL_WORLD_SIZE"] = "1";
  EXPECT_NE(error_of(local).find("LOCAL_RANK='1' is not valid: expected a rank on this node in 0..0"),
            std::string::npos)
      << error_of(local);
  local["LOCAL_WORLD_SIZE"] = "3";
  EXPECT_NE(error_of(local).find("LOCAL_WORLD_SIZE='3'"), std::string::npos);
}

}  // namespace
}  // namespace quartet

#include "backend/cuda/env_switch.h"

#include <algorithm>
#include <cstdlib>
#include <string>

#include <fmt/format.h>

#include "quartet/error.h"

namespace quartet::cuda {

int env_choice(const char* variable, std::initializer_list<std::string_view> values) {
  const char* env = std::getenv(variable);
  const std::string_view value = env == nullptr ? std::string_view() : std::string_view(env);
  if (value.empty()) return 0;
  int index = 0;
  for (const std::string_view v : values) {
    if (value == v) return index;
    ++index;
  }
  std::string accepted;
  index = 0;
  for (const std::string_view v : values) {
    const char* separator = index == 0 ? "" : values.size() == 2 ? " or " : ", ";
    accepted += fmt::format("{}\"{}\"", separator, v);
    ++index;
  }
  throw Error(fmt::format("{} must be {}{}, got \"{}\"", variable, values.size() == 2 ? "" : "one of ", accepted, value));
}

bool env_keeps_usual(const char* variable, std::string_view usual, std::string_view alternative) {
  return env_choice(variable, {usual, alternative}) == 0;
}

std::int64_t capped_blocks(std::int64_t blocks) {
  const char* env = std::getenv("QUARTET_CUDA_MAX_BLOCKS");
  if (env == nullptr || *env == '\0') return blocks;
  char* end = nullptr;
  const long long cap = std::strtoll(env, &end, 10);
  if (end == env || *end != '\0' || cap < 1) {
    throw Error(fmt::format("QUARTET_CUDA_MAX_BLOCKS must be a positive integer, got '{}'", env));
  }
  return std::min<std::int64_t>(blocks, cap);
}

}  // namespace quartet::cuda

#include "backend/cuda/env_switch.h"

#include <cstdlib>

#include <fmt/format.h>

#include "quartet/error.h"

namespace quartet::cuda {

bool env_keeps_usual(const char* variable, std::string_view usual, std::string_view alternative) {
  const char* env = std::getenv(variable);
  const std::string_view value = env == nullptr ? std::string_view() : std::string_view(env);
  if (value.empty() || value == usual) return true;
  if (value == alternative) return false;
  throw Error(fmt::format("{} must be \"{}\" or \"{}\", got \"{}\"", variable, usual, alternative, value));
}

}  // namespace quartet::cuda

#include <cstdlib>
#include <string>

#include "backend/cuda/dependent_launch.cuh"
#include "quartet/error.h"

namespace quartet::cuda {

bool dependent_launch_enabled() {
  static const bool enabled = [] {
    const char* env = std::getenv("QUARTET_DEPENDENT_LAUNCH");
    if (env == nullptr) return true;
    const std::string value = env;
    if (value == "1") return true;
    if (value == "0") return false;
    throw Error("QUARTET_DEPENDENT_LAUNCH must be 0 or 1, got '" + value + "'");
  }();
  return enabled;
}

}  // namespace quartet::cuda

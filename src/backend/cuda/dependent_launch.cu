#include "backend/cuda/dependent_launch.cuh"
#include "backend/cuda/env_switch.h"

namespace quartet::cuda {

bool dependent_launch_enabled() {
  static const bool enabled = env_keeps_usual("QUARTET_DEPENDENT_LAUNCH", "1", "0");
  return enabled;
}

}  // namespace quartet::cuda

#pragma once

#include <cstdint>
#include <string>

#include "quartet/train/trainer.h"
#include "support/small_run.h"

namespace quartet::testing {

// A small model whose attention takes the fused kernels (head dim 64) and whose linear layers
// fit every recipe's rotations (128 tokens per micro-batch, widths multiples of 128): the GPU
// training tests' run, on `device` ("cpu" or "cuda"), without evaluation during the run.
inline TrainConfig small_gpu_run(const std::string& recipe, const std::string& device, std::int64_t steps) {
  TrainConfig c = small_cpu_run(recipe, steps);
  c.device = device;
  c.model_overrides.d_model = 256;
  c.model_overrides.n_heads = 4;
  c.model_overrides.n_kv_heads = 2;
  c.seq = 128;
  c.seed = 5;
  return c;
}

}  // namespace quartet::testing

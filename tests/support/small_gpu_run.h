#pragma once

#include <cstdint>
#include <string>

#include "quartet/train/trainer.h"

namespace quartet::testing {

// A small model whose attention takes the fused kernels (head dim 64) and whose linear layers
// fit every recipe's rotations (128 tokens per micro-batch, widths multiples of 128): the GPU
// training tests' run, on `device` ("cpu" or "cuda"), without evaluation during the run.
inline TrainConfig small_gpu_run(const std::string& recipe, const std::string& device, std::int64_t steps) {
  TrainConfig c;
  c.device = device;
  c.recipe = recipe;
  c.model_size = "tiny";
  c.model_overrides.d_model = 256;
  c.model_overrides.n_heads = 4;
  c.model_overrides.n_kv_heads = 2;
  c.steps = steps;
  c.batch = 2;
  c.seq = 128;
  c.lr = 3e-3;
  c.eval_every = 0;
  c.eval_batches = 2;
  c.final_eval_batches = 2;
  c.seed = 5;
  return c;
}

}  // namespace quartet::testing

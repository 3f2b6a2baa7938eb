#pragma once

#include <cstdint>
#include <string>

#include "quartet/train/config.h"

namespace quartet::testing {

// The CPU trainer tests' run: the tiny model on 2 x 64-token sequences (128 tokens per step: the
// multiple of 128 the RHT-128 along the token dimension needs), evaluated only at the end.
inline TrainConfig small_cpu_run(const std::string& recipe, std::int64_t steps) {
  TrainConfig c;
  c.recipe = recipe;
  c.model_size = "tiny";
  c.steps = steps;
  c.batch = 2;
  c.seq = 64;
  c.lr = 3e-3;
  c.eval_every = 0;
  c.eval_batches = 2;
  c.final_eval_batches = 2;
  c.seed = 11;
  return c;
}

}  // namespace quartet::testing

// The learning-rate schedule (the paper's): linear warmup over warmup_fraction of the steps
// from lr/100 to lr, then cosine decay to lr/10 at the last step.
#pragma once

#include <cstdint>

#include "quartet/train/config.h"

namespace quartet {

// The learning rate of 0-based step `step`.
double learning_rate(const TrainConfig& config, std::int64_t step);

}  // namespace quartet

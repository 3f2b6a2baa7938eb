// The learning-rate schedules (docs/run-options.md). Every schedule starts with the paper's
// linear warmup from lr/100 to lr over config.warmup() steps; then
//   cosine    cosine decay to the floor at the last step (the default: the paper's schedule)
//   linear    linear decay to the floor at the last step
//   wsd       warmup-stable-decay: lr until the last round(decay_fraction x steps) steps, which
//             fall linearly to the floor (the last step is at the floor)
//   constant  lr to the end
// The floor is min_lr, or lr/10 when the run does not set it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "quartet/train/config.h"

namespace quartet {

// The schedule names --schedule accepts, the default first.
const std::vector<std::string>& schedule_names();

// The learning rate of 0-based step `step`.
double learning_rate(const TrainConfig& config, std::int64_t step);

// Checks the schedule and AdamW fields of `config` on their own and against each other (the
// warmup and the decay fit in the steps, min_lr <= lr, options that do nothing under the chosen
// schedule are not set); throws Error naming the flag. Part of TrainConfig::validate().
void validate_schedule(const TrainConfig& config);

}  // namespace quartet

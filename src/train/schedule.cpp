#include "quartet/train/schedule.h"

#include <algorithm>
#include <cmath>

namespace quartet {

double learning_rate(const TrainConfig& c, std::int64_t step) {
  const auto warmup = static_cast<std::int64_t>(std::llround(c.warmup_fraction * static_cast<double>(c.steps)));
  if (step < warmup) {
    const double f = static_cast<double>(step) / static_cast<double>(warmup);
    return c.lr * (0.01 + 0.99 * f);
  }
  const std::int64_t decay_steps = std::max<std::int64_t>(1, c.steps - 1 - warmup);
  const double progress = std::min(1.0, static_cast<double>(step - warmup) / static_cast<double>(decay_steps));
  return c.lr * (0.1 + 0.9 * 0.5 * (1.0 + std::cos(M_PI * progress)));
}

}  // namespace quartet

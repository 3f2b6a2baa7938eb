#include "quartet/train/schedule.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <utility>

#include "quartet/error.h"

namespace quartet {

namespace {

// The last round(decay_fraction x steps) steps decay under wsd.
std::int64_t wsd_decay_steps(const TrainConfig& c) {
  const double f = c.decay_fraction.value_or(TrainConfig::kDefaultDecayFraction);
  return static_cast<std::int64_t>(std::llround(f * static_cast<double>(c.steps)));
}

}  // namespace

const std::vector<std::string>& schedule_names() {
  static const std::vector<std::string> names = {"cosine", "linear", "wsd", "constant"};
  return names;
}

std::int64_t TrainConfig::warmup() const {
  if (warmup_steps) return *warmup_steps;
  return static_cast<std::int64_t>(std::llround(warmup_fraction * static_cast<double>(steps)));
}

double learning_rate(const TrainConfig& c, std::int64_t step) {
  const std::int64_t warmup = c.warmup();
  if (step < warmup) {
    const double f = static_cast<double>(step) / static_cast<double>(warmup);
    return c.lr * (0.01 + 0.99 * f);
  }
  if (c.schedule == "constant") return c.lr;
  // The floor as a fraction of lr. The default is the literal 0.1 (not (lr/10)/lr, which can
  // differ in the last bit), and 1 - 0.1 == 0.9 exactly in double, so the default cosine
  // schedule computes bitwise what it always did: lr * (0.1 + 0.9 * 0.5 * (1 + cos(pi p))).
  const double floor_ratio = c.min_lr ? *c.min_lr / c.lr : 0.1;
  if (c.schedule == "wsd") {
    const std::int64_t decay = wsd_decay_steps(c);
    const std::int64_t decay_start = c.steps - decay;
    if (step < decay_start) return c.lr;
    // (step - decay_start + 1) / decay: the first decay step is already below lr and the last
    // step reaches the floor, even for a decay of a single step.
    const double progress = std::min(1.0, static_cast<double>(step - decay_start + 1) / static_cast<double>(decay));
    return c.lr * (floor_ratio + (1.0 - floor_ratio) * (1.0 - progress));
  }
  // cosine and linear: from lr at the first step after the warmup to the floor at the last step.
  const std::int64_t decay_steps = std::max<std::int64_t>(1, c.steps - 1 - warmup);
  const double progress = std::min(1.0, static_cast<double>(step - warmup) / static_cast<double>(decay_steps));
  if (c.schedule == "linear") return c.lr * (floor_ratio + (1.0 - floor_ratio) * (1.0 - progress));
  return c.lr * (floor_ratio + (1.0 - floor_ratio) * 0.5 * (1.0 + std::cos(M_PI * progress)));
}

void validate_schedule(const TrainConfig& c) {
  const auto fail = [](const std::string& why) { throw Error("train: " + why); };
  const std::vector<std::string>& names = schedule_names();
  if (std::find(names.begin(), names.end(), c.schedule) == names.end()) {
    fail(fmt::format("--schedule must be one of {}, got '{}'", fmt::join(names, ", "), c.schedule));
  }
  if (!(c.warmup_fraction >= 0) || !(c.warmup_fraction < 1)) {
    fail(fmt::format("--warmup-fraction must be in [0, 1), got {}", c.warmup_fraction));
  }
  if (c.warmup_steps && *c.warmup_steps < 0) fail(fmt::format("--warmup-steps must be at least 0, got {}", *c.warmup_steps));
  // A warmup as long as the run would never reach lr (and the decay would have no steps).
  if (c.warmup() > 0 && c.warmup() >= c.steps) {
    fail(c.warmup_steps
             ? fmt::format("--warmup-steps {} must be fewer than --steps {}", *c.warmup_steps, c.steps)
             : fmt::format("--warmup-fraction {} of --steps {} is {} warmup steps: it must be fewer than the steps",
                           c.warmup_fraction, c.steps, c.warmup()));
  }
  if (c.min_lr) {
    if (!std::isfinite(*c.min_lr) || *c.min_lr < 0 || *c.min_lr > c.lr) {
      fail(fmt::format("--min-lr must be in [0, --lr {}], got {}", c.lr, *c.min_lr));
    }
    if (c.schedule == "constant") fail("--min-lr has no effect with --schedule constant (it never decays); leave it out");
  }
  if (c.decay_fraction) {
    if (c.schedule != "wsd") {
      fail(fmt::format("--decay-fraction applies only to --schedule wsd, not {}; leave it out", c.schedule));
    }
    if (!(*c.decay_fraction > 0) || !(*c.decay_fraction <= 1)) {
      fail(fmt::format("--decay-fraction must be in (0, 1], got {}", *c.decay_fraction));
    }
  }
  if (c.schedule == "wsd") {
    const std::int64_t decay = wsd_decay_steps(c);
    const double f = c.decay_fraction.value_or(TrainConfig::kDefaultDecayFraction);
    if (decay < 1) {
      fail(fmt::format("--schedule wsd: --decay-fraction {} of --steps {} rounds to no decay steps; raise it", f,
                       c.steps));
    }
    if (c.warmup() + decay > c.steps) {
      fail(fmt::format("--schedule wsd: the warmup ({} steps) and the decay ({} steps: --decay-fraction {} of --steps "
                       "{}) must fit in the steps",
                       c.warmup(), decay, f, c.steps));
    }
  }
  for (const auto& [value, flag] : {std::pair{c.beta1, "--beta1"}, {c.beta2, "--beta2"}}) {
    if (!(value >= 0) || !(value < 1)) fail(fmt::format("{} must be in [0, 1), got {}", flag, value));
  }
  if (!(c.eps > 0) || !std::isfinite(c.eps)) fail(fmt::format("--eps must be a finite number greater than 0, got {}", c.eps));
}

}  // namespace quartet

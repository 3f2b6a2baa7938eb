// The learning-rate schedules, the AdamW options and their place in the saved config. Expected
// values are worked out by hand in the comments, not computed by the code under test.
#include "quartet/train/schedule.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "quartet/error.h"
#include "quartet/train/trainer.h"

namespace quartet {
namespace {

// The schedule as it was before --schedule existed (src/train/schedule.cpp at 7a79a8f), kept
// verbatim: the default must still compute exactly this.
double original_learning_rate(const TrainConfig& c, std::int64_t step) {
  const auto warmup = static_cast<std::int64_t>(std::llround(c.warmup_fraction * static_cast<double>(c.steps)));
  if (step < warmup) {
    const double f = static_cast<double>(step) / static_cast<double>(warmup);
    return c.lr * (0.01 + 0.99 * f);
  }
  const std::int64_t decay_steps = std::max<std::int64_t>(1, c.steps - 1 - warmup);
  const double progress = std::min(1.0, static_cast<double>(step - warmup) / static_cast<double>(decay_steps));
  return c.lr * (0.1 + 0.9 * 0.5 * (1.0 + std::cos(M_PI * progress)));
}

bool same_bits(double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0; }

TEST(Schedule, DefaultCosineIsBitwiseTheOriginalSchedule) {
  for (const double lr : {3e-3, 1.0, 7.3e-4}) {
    for (const std::int64_t steps : {1, 2, 7, 600, 1001}) {
      TrainConfig c;
      c.lr = lr;
      c.steps = steps;
      ASSERT_EQ(c.schedule, "cosine");
      for (std::int64_t s = 0; s < steps; ++s) {
        ASSERT_TRUE(same_bits(learning_rate(c, s), original_learning_rate(c, s)))
            << "lr " << lr << " steps " << steps << " step " << s;
      }
    }
  }
}

// 101 steps, warmup 10 (explicit), lr 1: the decay runs over steps 10..100 (90 intervals), so
// step 55 is half way.
TrainConfig hundred_and_one(const std::string& schedule) {
  TrainConfig c;
  c.steps = 101;
  c.lr = 1.0;
  c.schedule = schedule;
  c.warmup_steps = 10;
  return c;
}

TEST(Schedule, WarmupStepsReplaceTheFraction) {
  TrainConfig c = hundred_and_one("cosine");
  EXPECT_DOUBLE_EQ(learning_rate(c, 0), 0.01);
  EXPECT_DOUBLE_EQ(learning_rate(c, 5), 0.01 + 0.99 * 0.5);  // 0.505
  EXPECT_DOUBLE_EQ(learning_rate(c, 10), 1.0);
  c.warmup_steps = 0;  // no warmup: lr from the first step
  EXPECT_DOUBLE_EQ(learning_rate(c, 0), 1.0);
}

TEST(Schedule, CosineDecaysToMinLr) {
  TrainConfig c = hundred_and_one("cosine");
  c.min_lr = 0.0;
  EXPECT_DOUBLE_EQ(learning_rate(c, 10), 1.0);
  EXPECT_NEAR(learning_rate(c, 55), 0.5, 1e-15);        // 0.5 (1 + cos(pi/2))
  EXPECT_NEAR(learning_rate(c, 100), 0.0, 1e-15);       // cos(pi) = -1
  c.min_lr = 0.2;
  EXPECT_NEAR(learning_rate(c, 55), 0.2 + 0.8 * 0.5, 1e-15);  // 0.6
  EXPECT_NEAR(learning_rate(c, 100), 0.2, 1e-15);
}

TEST(Schedule, LinearFallsInAStraightLine) {
  TrainConfig c = hundred_and_one("linear");
  EXPECT_DOUBLE_EQ(learning_rate(c, 10), 1.0);
  EXPECT_NEAR(learning_rate(c, 55), 0.55, 1e-15);   // half way from 1 to the default floor 0.1
  EXPECT_NEAR(learning_rate(c, 28), 0.82, 1e-15);   // 18/90 = 0.2 of the way: 1 - 0.9 x 0.2
  EXPECT_NEAR(learning_rate(c, 100), 0.1, 1e-15);
  c.min_lr = 0.0;
  EXPECT_NEAR(learning_rate(c, 55), 0.5, 1e-15);
  EXPECT_NEAR(learning_rate(c, 100), 0.0, 1e-15);
}

TEST(Schedule, WarmupStableDecay) {
  // 100 steps, warmup 10% = 10, decay 20% = the last 20 steps (80..99), floor 0.1.
  TrainConfig c;
  c.steps = 100;
  c.lr = 1.0;
  c.schedule = "wsd";
  EXPECT_DOUBLE_EQ(learning_rate(c, 5), 0.505);
  for (std::int64_t s = 10; s < 80; ++s) EXPECT_EQ(learning_rate(c, s), 1.0) << "step " << s;
  EXPECT_NEAR(learning_rate(c, 80), 1.0 - 0.9 / 20, 1e-15);       // 0.955
  EXPECT_NEAR(learning_rate(c, 89), 1.0 - 0.9 * 10 / 20, 1e-15);  // 0.55
  EXPECT_NEAR(learning_rate(c, 99), 0.1, 1e-15);
  c.decay_fraction = 0.5;  // decay over steps 50..99, to 0
  c.min_lr = 0.0;
  EXPECT_EQ(learning_rate(c, 49), 1.0);
  EXPECT_NEAR(learning_rate(c, 74), 0.5, 1e-15);  // 25 of 50
  EXPECT_NEAR(learning_rate(c, 99), 0.0, 1e-15);
}

TEST(Schedule, ConstantHoldsLrAfterTheWarmup) {
  TrainConfig c = hundred_and_one("constant");
  EXPECT_DOUBLE_EQ(learning_rate(c, 5), 0.505);
  for (std::int64_t s = 10; s < 101; ++s) EXPECT_EQ(learning_rate(c, s), 1.0) << "step " << s;
}

// validate() must refuse the config with a message naming `flag`.
void expect_refused(const TrainConfig& c, const std::string& flag) {
  try {
    c.validate();
    ADD_FAILURE() << "accepted a config that should be refused for " << flag;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(flag), std::string::npos) << e.what();
  }
}

TEST(Schedule, BadSettingsAreRefusedNamingTheFlag) {
  const auto with = [](auto change) {
    TrainConfig c;
    c.steps = 100;
    change(c);
    return c;
  };
  expect_refused(with([](TrainConfig& c) { c.schedule = "cosin"; }), "--schedule");
  expect_refused(with([](TrainConfig& c) { c.warmup_fraction = 1.0; }), "--warmup-fraction");
  expect_refused(with([](TrainConfig& c) { c.warmup_fraction = 0.996; }), "--warmup-fraction");  // rounds to 100
  expect_refused(with([](TrainConfig& c) { c.warmup_steps = 100; }), "--warmup-steps");
  expect_refused(with([](TrainConfig& c) { c.warmup_steps = -1; }), "--warmup-steps");
  expect_refused(with([](TrainConfig& c) { c.min_lr = c.lr * 2; }), "--min-lr");
  expect_refused(with([](TrainConfig& c) { c.min_lr = -1e-4; }), "--min-lr");
  expect_refused(with([](TrainConfig& c) { c.min_lr = NAN; }), "--min-lr");
  expect_refused(with([](TrainConfig& c) { c.schedule = "constant"; c.min_lr = 1e-4; }), "--min-lr");
  expect_refused(with([](TrainConfig& c) { c.decay_fraction = 0.3; }), "--decay-fraction");  // cosine
  expect_refused(with([](TrainConfig& c) { c.schedule = "wsd"; c.decay_fraction = 0.0; }), "--decay-fraction");
  expect_refused(with([](TrainConfig& c) { c.schedule = "wsd"; c.decay_fraction = 1.5; }), "--decay-fraction");
  expect_refused(with([](TrainConfig& c) { c.schedule = "wsd"; c.decay_fraction = 0.004; }), "--decay-fraction");
  expect_refused(with([](TrainConfig& c) { c.schedule = "wsd"; c.decay_fraction = 0.95; }), "--decay-fraction");
  expect_refused(with([](TrainConfig& c) { c.beta1 = 1.0; }), "--beta1");
  expect_refused(with([](TrainConfig& c) { c.beta1 = -0.1; }), "--beta1");
  expect_refused(with([](TrainConfig& c) { c.beta2 = 1.0; }), "--beta2");
  expect_refused(with([](TrainConfig& c) { c.eps = 0.0; }), "--eps");
  expect_refused(with([](TrainConfig& c) { c.eps = INFINITY; }), "--eps");
  // Finite and positive as doubles, but 0, subnormal or infinite in the optimizer's FP32.
  expect_refused(with([](TrainConfig& c) { c.eps = 1e-50; }), "--eps");
  expect_refused(with([](TrainConfig& c) { c.eps = 1e-40; }), "--eps");  // subnormal in FP32
  expect_refused(with([](TrainConfig& c) { c.lr = 1e39; }), "--lr");
  expect_refused(with([](TrainConfig& c) { c.weight_decay = 1e300; }), "--weight-decay");
  expect_refused(with([](TrainConfig& c) { c.grad_clip = 1e-46; }), "--grad-clip");
  expect_refused(with([](TrainConfig& c) { c.min_lr = 1e-45; }), "--min-lr");
  expect_refused(with([](TrainConfig& c) { c.beta2 = 0.99999999999; }), "--beta2");  // 1 in FP32
  // The edges that are allowed.
  EXPECT_NO_THROW(with([](TrainConfig& c) { c.eps = 1.2e-38; c.weight_decay = 0; c.min_lr = 0; }).validate());
  EXPECT_NO_THROW(with([](TrainConfig& c) { c.beta2 = 0.9999999; }).validate());  // 1 - 2^-24 in FP32
  EXPECT_NO_THROW(with([](TrainConfig& c) { c.schedule = "wsd"; c.decay_fraction = 0.9; }).validate());
  EXPECT_NO_THROW(with([](TrainConfig& c) { c.min_lr = c.lr; c.warmup_steps = 99; c.beta1 = 0; }).validate());
}

TEST(Schedule, SettingsAreSavedAndOldConfigsLoadWithTheDefaults) {
  TrainConfig c;
  c.schedule = "wsd";
  c.warmup_steps = 7;
  c.min_lr = 1e-5;
  c.decay_fraction = 0.3;
  c.beta1 = 0.8;
  c.beta2 = 0.99;
  c.eps = 1e-6;
  const nlohmann::json j = c.to_json();
  EXPECT_EQ(j.at("schedule"), "wsd");
  EXPECT_EQ(j.at("warmup_steps"), 7);
  EXPECT_EQ(j.at("min_lr"), 1e-5);
  EXPECT_EQ(j.at("decay_fraction"), 0.3);
  EXPECT_EQ(j.at("beta1"), 0.8);
  EXPECT_EQ(j.at("beta2"), 0.99);
  EXPECT_EQ(j.at("eps"), 1e-6);
  const TrainConfig back = TrainConfig::from_json(j);
  EXPECT_EQ(back.schedule, "wsd");
  EXPECT_EQ(back.warmup_steps, 7);
  EXPECT_EQ(back.min_lr, 1e-5);
  EXPECT_EQ(back.decay_fraction, 0.3);
  EXPECT_EQ(back.beta1, 0.8);
  EXPECT_EQ(back.beta2, 0.99);
  EXPECT_EQ(back.eps, 1e-6);

  // Unset optional settings are not written: their defaults follow lr and steps.
  const nlohmann::json plain = TrainConfig{}.to_json();
  EXPECT_FALSE(plain.contains("warmup_steps"));
  EXPECT_FALSE(plain.contains("min_lr"));
  EXPECT_FALSE(plain.contains("decay_fraction"));

  // A config saved before these settings existed has none of their keys.
  nlohmann::json old = plain;
  for (const char* key : {"schedule", "beta1", "beta2", "eps"}) old.erase(key);
  const TrainConfig loaded = TrainConfig::from_json(old);
  EXPECT_EQ(loaded.schedule, "cosine");
  EXPECT_FALSE(loaded.warmup_steps.has_value());
  EXPECT_FALSE(loaded.min_lr.has_value());
  EXPECT_FALSE(loaded.decay_fraction.has_value());
  EXPECT_EQ(loaded.beta1, 0.9);
  EXPECT_EQ(loaded.beta2, 0.95);
  EXPECT_EQ(loaded.eps, 1e-8);

  // A bad saved value names the file's field.
  nlohmann::json bad = plain;
  bad["beta2"] = 1.5;
  try {
    TrainConfig::from_json(bad, "state.json", "config");
    ADD_FAILURE() << "beta2 1.5 was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--beta2"), std::string::npos) << e.what();
  }
}

TrainConfig three_steps() {
  TrainConfig c;
  c.recipe = "bf16";
  c.steps = 3;
  c.batch = 2;
  c.seq = 64;
  c.eval_every = 0;
  c.eval_batches = 1;
  c.final_eval_batches = 1;
  c.seed = 5;
  return c;
}

TEST(Schedule, TheTrainerStepsWithTheChosenSchedule) {
  TrainConfig c = three_steps();
  c.schedule = "linear";
  c.warmup_steps = 0;
  c.min_lr = 0.0;
  const TrainResult r = train(c);
  ASSERT_EQ(r.history.size(), 3u);
  // lr 3e-3 at step 0, half way at step 1, 0 at the last step.
  EXPECT_DOUBLE_EQ(r.history[0].lr, 3e-3);
  EXPECT_DOUBLE_EQ(r.history[1].lr, 1.5e-3);
  EXPECT_EQ(r.history[2].lr, 0.0);
}

// The first AdamW update does not depend on the betas (bias correction cancels them), so their
// effect shows in the loss of step 3, after the second update; eps changes the first update.
TEST(Schedule, TheAdamWSettingsReachTheOptimizer) {
  const double reference = train(three_steps()).history[2].loss;
  TrainConfig b1 = three_steps();
  b1.beta1 = 0.5;
  TrainConfig b2 = three_steps();
  b2.beta2 = 0.5;
  TrainConfig eps = three_steps();
  eps.eps = 1.0;
  EXPECT_NE(train(b1).history[2].loss, reference);
  EXPECT_NE(train(b2).history[2].loss, reference);
  EXPECT_NE(train(eps).history[1].loss, train(three_steps()).history[1].loss);
  // and the same settings give the same run, so the differences above are the settings'.
  EXPECT_EQ(train(three_steps()).history[2].loss, reference);
}

}  // namespace
}  // namespace quartet

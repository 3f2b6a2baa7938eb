// TrainStep's step time (StepOutcome::device_seconds) on the CPU, whose device marks read the
// host's clock when the work before them is done: a step launched while the one before it was
// in flight counts from that step's end, so a host pause between the two launches is in it;
// any other step counts from its own start, so a pause before its launch (an evaluation, say)
// is not. The pause (300 ms) is long beside a step of the tiny model (milliseconds).
#include <gtest/gtest.h>

#include <chrono>
#include <random>
#include <thread>

#include "quartet/backend/backend.h"
#include "quartet/nn/llama.h"
#include "quartet/train/optimizer.h"
#include "quartet/train/train_step.h"

namespace quartet {
namespace {

constexpr double kPause = 0.3;

class StepTime : public ::testing::Test {
 protected:
  StepTime()
      : backend(make_cpu_backend()),
        model(*backend, llama_preset("tiny", 256), make_recipe("bf16"), 1),
        optimizer(*backend, model),
        step(*backend, model, optimizer, 2, 16) {
    std::mt19937 gen(3);
    std::uniform_int_distribution<std::int32_t> id(0, 255);
    batch.inputs.resize(32);
    batch.targets.resize(32);
    for (std::size_t i = 0; i < 32; ++i) {
      batch.inputs[i] = id(gen);
      batch.targets[i] = id(gen);
    }
  }

  void launch(std::int64_t i) {
    AdamWStep hyper;
    hyper.lr = 1e-3;
    hyper.step = i + 1;
    step.launch(i, {batch}, 1.0 / 32, hyper);
  }
  static void pause() { std::this_thread::sleep_for(std::chrono::duration<double>(kPause)); }

  std::unique_ptr<Backend> backend;
  LlamaModel model;
  AdamW optimizer;
  TrainStep step;
  Batch batch;
};

TEST_F(StepTime, AStepLaunchedBehindAnotherCountsFromItsEnd) {
  launch(0);
  pause();
  launch(1);  // step 0 still in flight
  const StepOutcome first = step.finish(), second = step.finish();
  EXPECT_FALSE(first.follows_previous);
  EXPECT_TRUE(second.follows_previous);
  EXPECT_LT(first.device_seconds, kPause);
  EXPECT_GE(second.device_seconds, kPause);  // from step 0's end, across the pause
}

TEST_F(StepTime, AStepLaunchedAloneCountsFromItsStart) {
  launch(0);
  const StepOutcome first = step.finish();
  pause();
  const auto before = std::chrono::steady_clock::now();
  launch(1);
  const StepOutcome second = step.finish();
  EXPECT_FALSE(second.follows_previous);
  EXPECT_LT(second.device_seconds, kPause);  // the pause before its launch is not in it
  EXPECT_GT(second.device_seconds, 0.0);
  EXPECT_GE(second.started_at, before);
  EXPECT_TRUE(first.applied && second.applied);
}

TEST_F(StepTime, MarksOfThreeStepsInFlightInTurnStayApart) {
  // Steps 0..3 launched two at a time: each finish() compares marks no later launch moved.
  launch(0);
  launch(1);
  step.finish();
  pause();
  launch(2);
  const StepOutcome one = step.finish();
  launch(3);
  const StepOutcome two = step.finish(), three = step.finish();
  EXPECT_TRUE(one.follows_previous && two.follows_previous && three.follows_previous);
  EXPECT_LT(one.device_seconds, kPause);   // step 1 ran right after step 0, before the pause
  EXPECT_GE(two.device_seconds, kPause);   // step 2 was launched after it
  EXPECT_LT(three.device_seconds, kPause);
}

}  // namespace
}  // namespace quartet

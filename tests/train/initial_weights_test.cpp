// `--init-from` (initial_weights.h): a new run that starts from a checkpoint's weights. The
// reference for "the checkpoint's weights" is the run that wrote it: a run started from them
// with a learning rate far below the weights' FP32 resolution (1e-30 against weights of about
// 0.02, whose last bit is about 2e-9) changes no weight, so its final evaluation over the same
// windows is the writer's, bit for bit.
#include "quartet/train/initial_weights.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "quartet/error.h"
#include "quartet/train/trainer.h"
#include "quartet/util/files.h"
#include "support/error_of.h"
#include "support/small_run.h"
#include "support/temp_dir.h"

namespace quartet {
namespace {

using testing::error_of;
using testing::small_cpu_run;

// A bf16 run of 12 steps written to `dir`; its checkpoint is dir/checkpoints/step-000012.
TrainResult pretrain(const testing::TempDir& dir) {
  TrainConfig c = small_cpu_run("bf16", 12);
  c.out_dir = dir.str();
  return train(c);
}

TEST(InitialWeights, ARunStartsFromTheCheckpointsModel) {
  testing::TempDir pretrained, started;
  const TrainResult writer = pretrain(pretrained);
  ASSERT_LT(writer.final_val_loss, 4.5);  // well below a random model's ln(257) = 5.55

  TrainConfig c = small_cpu_run("bf16", 1);
  c.lr = 1e-30;
  c.init_from = pretrained.str();  // a run folder: its latest checkpoint
  c.out_dir = started.str();
  const TrainResult from = train(c);
  EXPECT_EQ(from.final_val_loss, writer.final_val_loss);
  EXPECT_EQ(from.final_val_bpb, writer.final_val_bpb);
  // The run records the checkpoint folder it read, not the run folder it was given.
  const nlohmann::json state =
      nlohmann::json::parse(read_file(started.path() / "checkpoints" / "step-000001" / "state.json"));
  EXPECT_EQ(state.at("config").at("init_from"),
            std::filesystem::weakly_canonical(pretrained.path() / "checkpoints" / "step-000012").string());

  c.init_from.clear();
  c.out_dir.clear();
  EXPECT_GT(train(c).final_val_loss, 5.0) << "without --init-from the weights are random";
}

// The same weights under a 4-bit forward pass: close to the BF16 evaluation, not equal to it.
TEST(InitialWeights, AnotherRecipeStartsFromTheSameWeights) {
  testing::TempDir pretrained;
  const TrainResult writer = pretrain(pretrained);
  TrainConfig c = small_cpu_run("quartet2", 1);
  c.lr = 1e-30;
  c.init_from = (pretrained.path() / "checkpoints" / "step-000012").string();
  const TrainResult from = train(c);
  EXPECT_NE(from.final_val_loss, writer.final_val_loss);
  EXPECT_NEAR(from.final_val_loss, writer.final_val_loss, 0.05 * writer.final_val_loss);
}

// A resumed run continues from its own checkpoint: the one it started from is not read again
// (here it is gone), and the steps after the resume are the uninterrupted run's.
TEST(InitialWeights, AResumedRunContinuesFromItsOwnCheckpoint) {
  testing::TempDir pretrained, full_dir, resumed_dir;
  pretrain(pretrained);
  TrainConfig c = small_cpu_run("quartet2", 4);
  c.init_from = pretrained.str();
  c.save_every = 2;
  c.out_dir = full_dir.str();
  const TrainResult full = train(c);
  std::filesystem::remove_all(pretrained.path());
  ResumeOptions r;
  r.out_dir = resumed_dir.str();
  const TrainResult resumed = resume((full_dir.path() / "checkpoints" / "step-000002").string(), r);
  ASSERT_EQ(resumed.history.size(), 2u);
  EXPECT_EQ(resumed.history[0].loss, full.history[2].loss);
  EXPECT_EQ(resumed.history[1].loss, full.history[3].loss);
  EXPECT_EQ(resumed.final_val_loss, full.final_val_loss);
}

TEST(InitialWeights, RefusesAModelOfAnotherShapeOrTokenizer) {
  testing::TempDir pretrained;
  pretrain(pretrained);
  TrainConfig c = small_cpu_run("bf16", 1);
  c.init_from = pretrained.str();
  c.model_overrides.n_layers = 3;
  std::string e = error_of([&] { train(c); });
  EXPECT_NE(e.find("its model (tiny: 2 layers, d 128"), std::string::npos) << e;
  EXPECT_NE(e.find("is not this run's (tiny: 3 layers, d 128"), std::string::npos) << e;

  c.model_overrides.n_layers = 0;
  c.tokenizer = "gpt2";
  e = error_of([&] { train(c); });
  EXPECT_NE(e.find("its model reads 'byte' tokens; this run's data is tokenized with 'gpt2'"), std::string::npos) << e;

  c.tokenizer.clear();
  c.init_from = (pretrained.path() / "nothing-here").string();
  e = error_of([&] { train(c); });
  EXPECT_NE(e.find("nothing-here"), std::string::npos) << e;
}

}  // namespace
}  // namespace quartet

// --keep-last and --save-every-minutes (RunControl): which checkpoints a run leaves behind.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <utility>

#include "quartet/error.h"
#include "quartet/train/checkpoint.h"
#include "quartet/train/trainer.h"
#include "quartet/util/files.h"
#include "support/temp_dir.h"

namespace quartet {
namespace {

std::set<std::string> names_in(const std::filesystem::path& dir) {
  std::set<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir)) names.insert(e.path().filename().string());
  return names;
}

void make_checkpoint_folder(const std::filesystem::path& dir) {
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "state.json") << "{}";
}

TEST(CheckpointRetention, PruneKeepsTheMostRecentAndTheOneLatestNames) {
  testing::TempDir run, elsewhere;
  const std::filesystem::path root = run.path() / "checkpoints";
  for (int step : {1, 2, 3, 4, 5}) make_checkpoint_folder(root / fmt::format("step-{:06}", step));
  write_file_atomic(root / "latest", "step-000002\n");  // a run resumed from step 2
  // Not checkpoints this code wrote: left alone.
  make_checkpoint_folder(root / "step-12x");
  make_checkpoint_folder(elsewhere.path() / "target");
  std::filesystem::create_directory_symlink(elsewhere.path() / "target", root / "step-000009");
  std::ofstream(root / "notes.txt") << "mine";

  EXPECT_TRUE(prune_checkpoints(run.path(), 0).empty());  // 0: keep all
  EXPECT_EQ(names_in(root).size(), 9u);

  const auto removed = prune_checkpoints(run.path(), 2);
  EXPECT_EQ(removed.size(), 2u);
  EXPECT_EQ(names_in(root), (std::set<std::string>{"step-000004", "step-000005", "step-000002", "latest", "step-12x",
                                                   "step-000009", "notes.txt"}));
  EXPECT_TRUE(std::filesystem::exists(elsewhere.path() / "target" / "state.json"));  // never followed

  write_file_atomic(root / "latest", "step-000005\n");
  prune_checkpoints(run.path(), 1);
  EXPECT_EQ(names_in(root), (std::set<std::string>{"step-000005", "latest", "step-12x", "step-000009", "notes.txt"}));
}

TrainConfig small_saving_run(const std::string& out, std::int64_t steps) {
  TrainConfig c;
  c.recipe = "bf16";
  c.steps = steps;
  c.batch = 2;
  c.seq = 64;
  c.eval_every = 0;
  c.eval_batches = 1;
  c.final_eval_batches = 1;
  c.out_dir = out;
  return c;
}

TEST(CheckpointRetention, ATrainingRunKeepsTheLastN) {
  testing::TempDir dir;
  TrainConfig c = small_saving_run(dir.str(), 5);
  c.save_every = 1;
  RunControl control;
  control.keep_last = 2;
  train(c, {}, control);
  EXPECT_EQ(names_in(dir.path() / "checkpoints"), (std::set<std::string>{"step-000004", "step-000005", "latest"}));
  EXPECT_EQ(read_file(dir.path() / "checkpoints" / "latest"), "step-000005\n");
}

TEST(CheckpointRetention, SavesWhenTheMinutesHavePassed) {
  // A step takes far longer than 1e-9 minutes (60 ns): every step is due for a save.
  testing::TempDir every, never;
  RunControl control;
  control.save_every_minutes = 1e-9;
  train(small_saving_run(every.str(), 3), {}, control);
  EXPECT_EQ(names_in(every.path() / "checkpoints"),
            (std::set<std::string>{"step-000001", "step-000002", "step-000003", "latest"}));
  // An hour never passes in this test: only the final checkpoint.
  control.save_every_minutes = 60;
  train(small_saving_run(never.str(), 3), {}, control);
  EXPECT_EQ(names_in(never.path() / "checkpoints"), (std::set<std::string>{"step-000003", "latest"}));
}

TEST(CheckpointRetention, BadRunControlsAreRefusedNamingTheFlag) {
  testing::TempDir dir;
  RunControl keep;
  keep.keep_last = -1;
  RunControl minutes;
  minutes.save_every_minutes = -5;
  for (const auto& [control, flag] : {std::pair{keep, "--keep-last"}, {minutes, "--save-every-minutes"}}) {
    try {
      train(small_saving_run(dir.str(), 1), {}, control);
      ADD_FAILURE() << flag << " was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(flag), std::string::npos) << e.what();
    }
  }
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "checkpoints"));  // refused before any work
}

}  // namespace
}  // namespace quartet

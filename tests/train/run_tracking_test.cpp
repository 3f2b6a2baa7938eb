// metrics.jsonl's clock and commit fields and the TensorBoard events of a run, read back from
// the files (the JSON lines by the JSON library, the events by the TFRecord reader).
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <vector>

#include <nlohmann/json.hpp>

#include "quartet/train/run_tracking.h"
#include "quartet/train/trainer.h"
#include "quartet/util/files.h"
#include "quartet/util/tensorboard_events.h"
#include "support/error_of.h"
#include "support/temp_dir.h"

namespace quartet {
namespace {

using testing::error_of;
using testing::TempDir;

TrainConfig small_run(const std::string& out_dir, std::int64_t steps) {
  TrainConfig c;
  c.recipe = "quartet2";
  c.steps = steps;
  c.batch = 2;
  c.seq = 64;
  c.eval_every = 2;
  c.eval_batches = 1;
  c.final_eval_batches = 1;
  c.seed = 5;
  c.out_dir = out_dir;
  return c;
}

double system_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::vector<nlohmann::json> metrics_lines(const std::filesystem::path& dir) {
  std::vector<nlohmann::json> lines;
  std::ifstream in(dir / "metrics.jsonl");
  for (std::string line; std::getline(in, line);) lines.push_back(nlohmann::json::parse(line));
  return lines;
}

std::vector<std::filesystem::path> events_files(const std::filesystem::path& dir) {
  std::vector<std::filesystem::path> files;
  for (const auto& e : std::filesystem::directory_iterator(dir / "tensorboard")) files.push_back(e.path());
  std::sort(files.begin(), files.end());
  return files;
}

std::map<std::string, float> scalars_of(const TensorBoardEvent& e) {
  std::map<std::string, float> m;
  for (const auto& s : e.scalars) m[s.tag] = s.value;
  return m;
}

TEST(RunTracking, MetricsLinesCarryTheTimeTheElapsedSecondsAndTheCommit) {
  TempDir dir;
  RunControl control;
  control.commit = "0123456789ab";
  const double before = system_now();
  const TrainResult r = train(small_run(dir.str(), 3), {}, control);
  const double after = system_now();
  const auto lines = metrics_lines(dir.path());
  ASSERT_EQ(lines.size(), 3u);
  double previous_time = before, previous_elapsed = 0;
  for (const auto& l : lines) {
    for (const char* field : {"step", "tokens", "loss", "lr", "grad_norm", "tokens_per_s", "skipped"}) {
      EXPECT_TRUE(l.contains(field)) << field;  // the fields readers already use stay
    }
    EXPECT_EQ(l.at("commit"), "0123456789ab");
    const double t = l.at("time"), elapsed = l.at("elapsed_s");
    EXPECT_GE(t, previous_time);
    EXPECT_LE(t, after);
    EXPECT_GT(elapsed, previous_elapsed);
    EXPECT_LE(elapsed, after - before);
    previous_time = t;
    previous_elapsed = elapsed;
  }
  EXPECT_GE(r.elapsed_seconds, previous_elapsed);
  EXPECT_GT(r.tokens_per_second, 0);
  // Without a commit (a caller that does not know it) the field says so rather than missing.
  TempDir other;
  train(small_run(other.str(), 1));
  EXPECT_EQ(metrics_lines(other.path()).at(0).at("commit"), "unknown");
}

TEST(RunTracking, TensorBoardEventsHoldTheSameScalarsAsMetricsJsonl) {
  TempDir dir;
  RunControl control;
  control.tensorboard = true;
  const TrainResult r = train(small_run(dir.str(), 3), {}, control);
  const auto files = events_files(dir.path());
  ASSERT_EQ(files.size(), 1u);
  EXPECT_EQ(r.tensorboard_file, files[0].string());
  EXPECT_EQ(files[0].filename().string().rfind("events.out.tfevents.", 0), 0u);
  const auto events = read_events_file(files[0]);
  const auto lines = metrics_lines(dir.path());
  ASSERT_EQ(events.size(), 1 + lines.size());
  EXPECT_EQ(events[0].file_version, "brain.Event:2");
  for (std::size_t i = 0; i < lines.size(); ++i) {
    const TensorBoardEvent& e = events[i + 1];
    const nlohmann::json& l = lines[i];
    EXPECT_EQ(e.step, l.at("step").get<std::int64_t>());
    EXPECT_EQ(e.wall_time, l.at("time").get<double>());
    auto s = scalars_of(e);
    EXPECT_EQ(s.at("train/loss"), static_cast<float>(l.at("loss").get<double>()));
    EXPECT_EQ(s.at("train/lr"), static_cast<float>(l.at("lr").get<double>()));
    EXPECT_EQ(s.at("train/grad_norm"), static_cast<float>(l.at("grad_norm").get<double>()));
    EXPECT_EQ(s.at("train/tokens_per_s"), static_cast<float>(l.at("tokens_per_s").get<double>()));
    EXPECT_EQ(s.at("train/skipped_steps"), static_cast<float>(l.at("skipped").get<double>()));
    // Validation only at the steps that evaluated (2, and the last).
    EXPECT_EQ(s.count("val/loss"), l.contains("val_loss") ? 1u : 0u) << "step " << e.step;
    if (l.contains("val_loss")) {
      EXPECT_EQ(s.at("val/loss"), static_cast<float>(l.at("val_loss").get<double>()));
      EXPECT_EQ(s.at("val/bpb"), static_cast<float>(l.at("val_bpb").get<double>()));
    }
  }
  EXPECT_EQ(scalars_of(events[2]).count("val/loss"), 1u);
  EXPECT_EQ(scalars_of(events[1]).count("val/loss"), 0u);
}

// Steps 1-4 with checkpoints at 2 and 4, then a resume from step 2 (as after a crash that lost
// step 4's checkpoint): a second events file restarts at step 3 and repeats steps 3 and 4, and
// the elapsed time goes on from what the checkpoint recorded.
TEST(RunTracking, AResumeWritesANewEventsFileThatRestartsAtTheCheckpoint) {
  TempDir dir;
  RunControl control;
  control.tensorboard = true;
  TrainConfig c = small_run(dir.str(), 4);
  c.save_every = 2;
  train(c, {}, control);
  const std::filesystem::path step2 = dir.path() / "checkpoints" / "step-000002";
  const double at_checkpoint = nlohmann::json::parse(read_file(step2 / "state.json")).at("elapsed_s");
  EXPECT_GE(at_checkpoint, metrics_lines(dir.path()).at(1).at("elapsed_s").get<double>());
  std::filesystem::remove_all(dir.path() / "checkpoints" / "step-000004");  // the crash lost it
  resume(step2.string(), {}, {}, control);

  const auto lines = metrics_lines(dir.path());
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_GT(lines[2].at("elapsed_s").get<double>(), at_checkpoint);
  EXPECT_GT(lines[3].at("elapsed_s").get<double>(), lines[2].at("elapsed_s").get<double>());

  const auto files = events_files(dir.path());
  ASSERT_EQ(files.size(), 2u);
  const auto first = read_events_file(files[0]), second = read_events_file(files[1]);
  ASSERT_EQ(first.size(), 5u);  // version, steps 1-4
  ASSERT_EQ(second.size(), 4u);  // version, START at 3, steps 3-4
  EXPECT_TRUE(second[1].session_start);
  EXPECT_EQ(second[1].step, 3);  // TensorBoard drops an earlier file's steps from here on
  EXPECT_TRUE(second[1].scalars.empty());
  EXPECT_EQ(second[2].step, 3);
  EXPECT_EQ(second[3].step, 4);
  // The resumed steps are the ones metrics.jsonl now holds.
  EXPECT_EQ(scalars_of(second[3]).at("train/loss"), static_cast<float>(lines[3].at("loss").get<double>()));
}

TEST(RunTracking, ACheckpointWithoutElapsedTimeResumesCountingFromZeroAndSaysSo) {
  TempDir dir;
  train(small_run(dir.str(), 2));
  const std::filesystem::path step2 = dir.path() / "checkpoints" / "step-000002";
  nlohmann::json state = nlohmann::json::parse(read_file(step2 / "state.json"));
  state.erase("elapsed_s");
  write_file_atomic(step2 / "state.json", state.dump(2));
  std::vector<std::string> logged;
  TrainCallbacks cb;
  cb.log = [&](const std::string& s) { logged.push_back(s); };
  ResumeOptions o;
  o.steps = 3;
  const double before = system_now();
  resume(step2.string(), o, cb);
  const double after = system_now();
  const double elapsed = metrics_lines(dir.path()).at(2).at("elapsed_s");
  EXPECT_LE(elapsed, after - before);
  EXPECT_TRUE(std::any_of(logged.begin(), logged.end(), [](const std::string& s) {
    return s.find("does not record the run's elapsed time") != std::string::npos;
  }));
  state["elapsed_s"] = "ten";
  write_file_atomic(step2 / "state.json", state.dump(2));
  const std::string e = error_of([&] { resume(step2.string(), o); });
  EXPECT_NE(e.find("\"elapsed_s\" must be a number of seconds >= 0, found \"ten\""), std::string::npos) << e;
}

TEST(RunTracking, ForceRemovesTheOldRunsEventsAndTensorBoardNeedsAnOutFolder) {
  TempDir dir;
  RunControl control;
  control.tensorboard = true;
  train(small_run(dir.str(), 1), {}, control);
  write_file_atomic(dir.path() / "tensorboard" / "notes.txt", "mine");
  control.replace_existing_run = true;
  const TrainResult again = train(small_run(dir.str(), 1), {}, control);
  const auto files = events_files(dir.path());
  ASSERT_EQ(files.size(), 2u);  // the new events file and the user's own file
  EXPECT_EQ(files[0].string(), again.tensorboard_file);
  EXPECT_EQ(files[1].filename(), "notes.txt");
  const std::string e = error_of([&] { train(small_run("", 1), {}, control); });
  EXPECT_NE(e.find("--tensorboard needs --out"), std::string::npos) << e;
}

}  // namespace
}  // namespace quartet

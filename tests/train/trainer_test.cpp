#include "quartet/train/trainer.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>

#include "quartet/data/shards.h"
#include "quartet/error.h"
#include "quartet/train/checkpoint.h"
#include "quartet/util/files.h"
#include "support/small_run.h"
#include "support/temp_dir.h"

namespace quartet {
namespace {

using testing::small_cpu_run;

double mean_loss(const TrainResult& r, std::size_t from, std::size_t to) {
  double s = 0;
  for (std::size_t i = from; i < to; ++i) s += r.history[i].loss;
  return s / static_cast<double>(to - from);
}

class EveryRecipe : public ::testing::TestWithParam<std::string> {};

// Every recipe trains: the loss is finite throughout and falls from the uniform ln(257) = 5.55
// (the first steps) to below 4 within 30 steps (bf16 reaches ~3.3 here).
TEST_P(EveryRecipe, TrainsATinyModelWithFallingLoss) {
  const TrainResult r = train(small_cpu_run(GetParam(), 30));
  ASSERT_EQ(r.history.size(), 30u);
  for (const StepMetrics& m : r.history) {
    ASSERT_TRUE(std::isfinite(m.loss)) << "step " << m.step;
    ASSERT_FALSE(m.was_skipped) << "step " << m.step;
  }
  EXPECT_NEAR(mean_loss(r, 0, 2), std::log(257.0), 0.3);
  EXPECT_LT(mean_loss(r, 25, 30), 4.0);
  EXPECT_LT(mean_loss(r, 25, 30), mean_loss(r, 0, 5) - 1.0);
  EXPECT_TRUE(std::isfinite(r.final_val_loss));
  EXPECT_GT(r.final_val_bpb, 0.0);
}

INSTANTIATE_TEST_SUITE_P(Recipes, EveryRecipe,
                         ::testing::Values("bf16", "nvidia", "nvidia+4/6", "tetrajet2", "quartet2", "quartet1",
                                           "quartet1-sr"),
                         [](const auto& param_info) {
                           std::string n = param_info.param;
                           for (char& ch : n) {
                             if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           }
                           return n;
                         });

TEST(Trainer, DeterministicFromTheSeed) {
  const TrainResult a = train(small_cpu_run("quartet2", 4)), b = train(small_cpu_run("quartet2", 4));
  TrainConfig other = small_cpu_run("quartet2", 4);
  other.seed = 12;
  const TrainResult c = train(other);
  for (std::size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(a.history[i].loss, b.history[i].loss);
    EXPECT_EQ(a.history[i].grad_norm, b.history[i].grad_norm);
  }
  EXPECT_NE(a.history[3].loss, c.history[3].loss);
}

// A run interrupted at a checkpoint and resumed is bitwise the same as one that never stopped:
// same per-step losses and gradient norms, same final weights and optimizer moments.
TEST(Trainer, ResumeIsBitwiseIdentical) {
  testing::TempDir full_dir, part_dir;
  TrainConfig c = small_cpu_run("quartet2", 8);
  c.grad_accum = 2;
  c.eval_every = 4;
  c.out_dir = full_dir.str();
  const TrainResult full = train(c);
  c.out_dir = part_dir.str();
  c.save_every = 3;
  c.steps = 8;
  // Stop after step 5 by running to 5 and keeping only the checkpoint of step 3.
  TrainConfig first = c;
  first.steps = 8;
  train(first);
  const std::string step3 = part_dir.str() + "/checkpoints/step-000003";
  ASSERT_TRUE(std::filesystem::exists(step3));
  ResumeOptions o;
  o.save_every = 0;
  RunControl rewind;  // the run holds checkpoints 6 and 8: going on from 3 rewinds it
  rewind.replace_existing_run = true;
  const TrainResult resumed = resume(step3, o, {}, rewind);
  ASSERT_EQ(resumed.history.size(), 5u);
  EXPECT_FALSE(std::filesystem::exists(part_dir.str() + "/checkpoints/step-000006"));  // the rewind removed it
  for (std::size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(resumed.history[i].step, full.history[i + 3].step);
    EXPECT_EQ(resumed.history[i].loss, full.history[i + 3].loss) << "step " << resumed.history[i].step;
    EXPECT_EQ(resumed.history[i].grad_norm, full.history[i + 3].grad_norm);
  }
  EXPECT_EQ(resumed.final_val_loss, full.final_val_loss);
  EXPECT_EQ(read_file(full_dir.str() + "/checkpoints/step-000008/model.safetensors"),
            read_file(part_dir.str() + "/checkpoints/step-000008/model.safetensors"));
  EXPECT_EQ(read_file(full_dir.str() + "/checkpoints/step-000008/optimizer.safetensors"),
            read_file(part_dir.str() + "/checkpoints/step-000008/optimizer.safetensors"));
  // metrics.jsonl was rewound to the checkpoint and continued: one line per step, in order.
  std::ifstream in(part_dir.str() + "/metrics.jsonl");
  std::string line;
  std::int64_t expected = 1;
  while (std::getline(in, line)) EXPECT_EQ(nlohmann::json::parse(line).at("step").get<std::int64_t>(), expected++);
  EXPECT_EQ(expected, 9);
}

// A checkpoint taken right after an epoch's last batch (a position too near the end of the
// stream for another window) resumes, and continues as the run that never stopped did: in
// either data order (shuffled: 15 windows of 64 tokens, 7 batches of 2 an epoch).
class EpochBoundary : public ::testing::TestWithParam<std::string> {};

TEST_P(EpochBoundary, ResumeIsBitwise) {
  testing::TempDir data, full_dir, part_dir;
  std::vector<std::int32_t> tokens(1000);
  for (std::size_t i = 0; i < tokens.size(); ++i) tokens[i] = i % 97 == 0 ? 256 : static_cast<std::int32_t>(i * 31 % 256);
  write_shard(data.path() / "tiny_train_000000.bin", tokens);
  write_shard(data.path() / "tiny_val_000000.bin", std::vector<std::int32_t>(tokens.begin(), tokens.begin() + 300));
  write_file_atomic(data.path() / "dataset.json", R"({"tokenizer": "byte", "documents": 1})");
  TrainConfig c = small_cpu_run("bf16", 10);
  c.data = data.str();
  c.data_order = GetParam();
  c.out_dir = full_dir.str();
  const TrainResult full = train(c);
  c.out_dir = part_dir.str();
  c.save_every = 7;  // 7 batches: where the 8th wraps
  train(c);
  const nlohmann::json state =
      nlohmann::json::parse(read_file(part_dir.path() / "checkpoints" / "step-000007" / "state.json"));
  // 896 tokens, or 14 of the 15 windows.
  ASSERT_EQ(state.at("data").at("position").get<std::int64_t>(), GetParam() == "shuffled" ? 14 : 896);
  ResumeOptions o;
  o.out_dir = (part_dir.path() / "resumed").string();
  const TrainResult resumed = resume((part_dir.path() / "checkpoints" / "step-000007").string(), o);
  ASSERT_EQ(resumed.history.size(), 3u);
  for (std::size_t i = 0; i < 3; ++i) EXPECT_EQ(resumed.history[i].loss, full.history[i + 7].loss) << "step " << i + 8;
}

INSTANTIATE_TEST_SUITE_P(DataOrders, EpochBoundary, ::testing::Values("sequential", "shuffled"));

// The shuffled order reads other batches than the sequential one (other losses from the first
// step: the first windows differ), and the run's config records it; a sequential run's config
// has no data_order key, as before the option.
TEST(Trainer, ShuffledDataOrderIsRecordedAndReadsOtherBatches) {
  testing::TempDir shuffled_dir, sequential_dir;
  TrainConfig c = small_cpu_run("bf16", 3);
  c.out_dir = sequential_dir.str();
  const TrainResult sequential = train(c);
  c.data_order = "shuffled";
  c.out_dir = shuffled_dir.str();
  const TrainResult shuffled = train(c);
  EXPECT_NE(shuffled.history[0].loss, sequential.history[0].loss);
  const auto config_of = [](const testing::TempDir& d) {
    return nlohmann::json::parse(read_file(d.path() / "checkpoints" / "step-000003" / "state.json")).at("config");
  };
  EXPECT_EQ(config_of(shuffled_dir).at("data_order"), "shuffled");
  EXPECT_FALSE(config_of(sequential_dir).contains("data_order"));
  c.data_order = "random";
  EXPECT_THROW(c.validate(), Error);
}

TEST(Trainer, MetricsFileHasOneObjectPerStep) {
  testing::TempDir dir;
  TrainConfig c = small_cpu_run("bf16", 3);
  c.out_dir = dir.str();
  train(c);
  std::ifstream in(dir.str() + "/metrics.jsonl");
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line);
    EXPECT_EQ(j.at("step").get<int>(), ++n);
    for (const char* key : {"loss", "tokens", "lr", "grad_norm", "tokens_per_s", "skipped"}) EXPECT_TRUE(j.contains(key)) << key;
  }
  EXPECT_EQ(n, 3);
  EXPECT_TRUE(std::filesystem::exists(dir.str() + "/checkpoints/latest"));
}

// A learning rate that blows the weights up makes later steps non-finite: they are skipped and
// counted, never applied, and the run goes on.
TEST(Trainer, NonFiniteStepsAreSkippedAndCounted) {
  for (const char* recipe : {"bf16", "quartet2"}) {
    TrainConfig c = small_cpu_run(recipe, 4);
    c.lr = 1e30;
    c.warmup_fraction = 0;
    std::vector<std::string> logs;
    TrainCallbacks cb;
    cb.log = [&](const std::string& s) { logs.push_back(s); };
    const TrainResult r = train(c, cb);
    EXPECT_FALSE(r.history[0].was_skipped) << recipe;
    EXPECT_GE(r.skipped_steps, 2) << recipe;
    EXPECT_EQ(r.history.back().skipped, r.skipped_steps);
    bool logged = false;
    for (const auto& l : logs) logged |= l.find("skipped") != std::string::npos;
    EXPECT_TRUE(logged) << recipe;
  }
}

// A diverged run used to skip every remaining step, save a checkpoint and succeed.
TEST(Trainer, ADivergedRunStopsAfterTheConfiguredConsecutiveSkips) {
  testing::TempDir dir;
  TrainConfig c = small_cpu_run("bf16", 30);
  c.lr = 1e30;
  c.warmup_fraction = 0;
  c.out_dir = dir.str();
  RunControl control;
  control.max_skipped_steps = 3;
  try {
    train(c, {}, control);
    ADD_FAILURE() << "a run that skipped every step ended successfully";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("diverged: 3 consecutive steps skipped"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("--max-skipped-steps"), std::string::npos) << e.what();
  }
  // No checkpoint of the diverged state; the metrics of the steps that ran are there.
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "checkpoints"));
  const std::string metrics = read_file(dir.path() / "metrics.jsonl");
  const auto lines = std::count(metrics.begin(), metrics.end(), '\n');
  EXPECT_GE(lines, 4);
  EXPECT_LT(lines, 30);
  // 0: never stop (the old behaviour, on request).
  c.steps = 6;
  c.out_dir.clear();
  control.max_skipped_steps = 0;
  EXPECT_GE(train(c, {}, control).skipped_steps, 3);
}

// Asks a `steps`-step bf16 run to stop once step 2 has been reported, under `overlap`; expects
// it to stop after step `stops_after` with a checkpoint of that step, and the resumed run to be
// the uninterrupted one's remaining steps, loss for loss.
void expect_stop_saves_and_resumes(std::int64_t steps, StepOverlap overlap, std::size_t stops_after) {
  testing::TempDir full_dir, dir;
  TrainConfig c = small_cpu_run("bf16", steps);
  c.out_dir = full_dir.str();
  const TrainResult full = train(c);
  c.out_dir = dir.str();
  std::atomic<bool> stop{false};
  RunControl control;
  control.stop = &stop;
  control.step_overlap = overlap;
  TrainCallbacks cb;
  cb.on_step = [&](const StepMetrics& m) {
    if (m.step == 2) stop = true;
  };
  const TrainResult stopped = train(c, cb, control);
  EXPECT_TRUE(stopped.stopped);
  ASSERT_EQ(stopped.history.size(), stops_after);
  const std::string checkpoint = fmt::format("step-{:06d}", stops_after);
  EXPECT_EQ(stopped.last_checkpoint, (dir.path() / "checkpoints" / checkpoint).string());
  EXPECT_EQ(read_file(dir.path() / "checkpoints" / "latest"), checkpoint + "\n");
  const TrainResult resumed = resume(dir.str());
  ASSERT_EQ(resumed.history.size(), static_cast<std::size_t>(steps) - stops_after);
  EXPECT_FALSE(resumed.stopped);
  for (std::size_t i = 0; i < resumed.history.size(); ++i) {
    EXPECT_EQ(resumed.history[i].loss, full.history[i + stops_after].loss) << "step " << i + stops_after + 1;
  }
}

// A stop request (what SIGINT/SIGTERM set) ends the run after the step under way, with a
// checkpoint of that step, from which the run goes on as if it had never stopped.
TEST(Trainer, AStopRequestSavesTheStepUnderWayAndReturns) { expect_stop_saves_and_resumes(5, StepOverlap::automatic, 2); }

// The next step queued before the last one's outcome is read (what a CUDA run does) is the same
// run: each step reads its own loss and gradient norm (not the one queued after it), the
// evaluations and checkpoints see the model of their own step. Forced on here, on the CPU.
TEST(Trainer, OverlappedStepsAreTheSameRun) {
  testing::TempDir plain_dir, overlapped_dir;
  TrainConfig c = small_cpu_run("quartet2", 8);
  c.grad_accum = 2;
  c.eval_every = 4;
  c.save_every = 3;
  RunControl control;
  control.step_overlap = StepOverlap::off;
  c.out_dir = plain_dir.str();
  const TrainResult plain = train(c, {}, control);
  control.step_overlap = StepOverlap::on;
  c.out_dir = overlapped_dir.str();
  const TrainResult overlapped = train(c, {}, control);
  ASSERT_EQ(plain.history.size(), overlapped.history.size());
  for (std::size_t i = 0; i < plain.history.size(); ++i) {
    EXPECT_EQ(overlapped.history[i].step, plain.history[i].step);
    EXPECT_EQ(overlapped.history[i].loss, plain.history[i].loss) << "step " << i + 1;
    EXPECT_EQ(overlapped.history[i].grad_norm, plain.history[i].grad_norm) << "step " << i + 1;
    EXPECT_EQ(overlapped.history[i].val_loss.has_value(), plain.history[i].val_loss.has_value()) << "step " << i + 1;
    if (plain.history[i].val_loss) {
      EXPECT_EQ(*overlapped.history[i].val_loss, *plain.history[i].val_loss);
    }
  }
  EXPECT_EQ(overlapped.final_val_loss, plain.final_val_loss);
  for (const char* step : {"step-000003", "step-000006", "step-000008"}) {
    for (const char* file : {"model.safetensors", "optimizer.safetensors"}) {
      EXPECT_EQ(read_file(overlapped_dir.path() / "checkpoints" / step / file),
                read_file(plain_dir.path() / "checkpoints" / step / file))
          << step << "/" << file;
    }
  }
}

// With two steps in flight a stop request finishes both: the run stops one step later than
// asked, with a checkpoint of that step, and resumes as if it had never stopped.
TEST(Trainer, AStopRequestWithOverlappedStepsFinishesBothAndResumes) {
  expect_stop_saves_and_resumes(6, StepOverlap::on, 3);
}

// train() into a folder that already holds a run used to cut its metrics.jsonl, move `latest`
// and leave the old checkpoints among the new ones.
TEST(Trainer, AnExistingRunIsReplacedOnlyOnRequest) {
  testing::TempDir dir;
  TrainConfig c = small_cpu_run("bf16", 3);
  c.save_every = 1;
  c.out_dir = dir.str();
  train(c);
  const std::string metrics = read_file(dir.path() / "metrics.jsonl");
  const std::string weights = read_file(dir.path() / "checkpoints/step-000003/model.safetensors");
  c.steps = 2;
  c.seed = 99;
  try {
    train(c);
    ADD_FAILURE() << "an existing run was overwritten";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("already holds a run"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("--force"), std::string::npos) << e.what();
  }
  EXPECT_EQ(read_file(dir.path() / "metrics.jsonl"), metrics);
  EXPECT_EQ(read_file(dir.path() / "checkpoints/step-000003/model.safetensors"), weights);
  EXPECT_EQ(read_file(dir.path() / "checkpoints/latest"), "step-000003\n");
  // A resume written into another run's folder is refused the same way.
  testing::TempDir other;
  TrainConfig o = small_cpu_run("bf16", 2);
  o.out_dir = other.str();
  train(o);
  ResumeOptions r;
  r.steps = 4;
  r.out_dir = dir.str();
  EXPECT_THROW(resume(other.str(), r), Error);
  EXPECT_EQ(read_file(dir.path() / "metrics.jsonl"), metrics);
  // Replacing: the old checkpoints go, and the record and plot `quartet train` wrote at the old
  // run's end, so the folder holds one run (even if the new one fails before its end).
  write_file_atomic(dir.path() / "notes.txt", "mine");
  for (const char* name : {"run.json", "training.png", "training.gnuplot"}) write_file_atomic(dir.path() / name, "old");
  RunControl replace;
  replace.replace_existing_run = true;
  train(c, {}, replace);
  for (const char* name : {"run.json", "training.png", "training.gnuplot"}) {
    EXPECT_FALSE(std::filesystem::exists(dir.path() / name)) << name;
  }
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "checkpoints/step-000003"));
  EXPECT_TRUE(std::filesystem::exists(dir.path() / "checkpoints/step-000002/state.json"));
  EXPECT_EQ(read_file(dir.path() / "checkpoints/latest"), "step-000002\n");
  EXPECT_EQ(read_file(dir.path() / "notes.txt"), "mine");
  const std::string replaced = read_file(dir.path() / "metrics.jsonl");
  EXPECT_EQ(std::count(replaced.begin(), replaced.end(), '\n'), 2);
  // A file is not a run folder.
  c.out_dir = (dir.path() / "notes.txt").string();
  try {
    train(c, {}, replace);
    ADD_FAILURE() << "a file was accepted as --out";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not a folder"), std::string::npos) << e.what();
  }
}

// Settings that do not change what is trained were silently ignored on resume; they apply now.
// Resuming a run in its own folder from a checkpoint older than its latest would write over the
// later checkpoints: refused, naming them, with every file of the run left as it was.
TEST(Trainer, ResumeFromAnOlderCheckpointIsRefusedWithoutForce) {
  testing::TempDir dir;
  TrainConfig c = small_cpu_run("bf16", 4);
  c.save_every = 2;
  c.out_dir = dir.str();
  train(c);
  const std::string later = dir.str() + "/checkpoints/step-000004/model.safetensors";
  const std::string weights = read_file(later), metrics = read_file(dir.str() + "/metrics.jsonl"),
                    latest = read_file(dir.str() + "/checkpoints/latest");
  ResumeOptions o;
  o.steps = 6;
  try {
    resume(dir.str() + "/checkpoints/step-000002", o);
    ADD_FAILURE() << "resume from step 2 with a checkpoint of step 4 was not refused";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("step-000004"), std::string::npos) << what;
    EXPECT_NE(what.find("--force"), std::string::npos) << what;
  }
  EXPECT_EQ(read_file(later), weights);
  EXPECT_EQ(read_file(dir.str() + "/metrics.jsonl"), metrics);
  EXPECT_EQ(read_file(dir.str() + "/checkpoints/latest"), latest);
  // From the latest checkpoint (or the run folder) nothing is in the way.
  EXPECT_EQ(resume(dir.str(), o).history.size(), 2u);
}

TEST(Trainer, ResumeAppliesEvaluationSettingsAndSaysSo) {
  testing::TempDir dir;
  TrainConfig c = small_cpu_run("bf16", 2);
  c.out_dir = dir.str();
  train(c);
  ResumeOptions o;
  o.steps = 4;
  o.eval_every = 1;
  o.device = "cpu";
  std::vector<std::string> logs;
  TrainCallbacks cb;
  cb.log = [&](const std::string& s) { logs.push_back(s); };
  const TrainResult r = resume(dir.str(), o, cb);
  ASSERT_EQ(r.history.size(), 2u);
  EXPECT_TRUE(r.history[0].val_loss.has_value());
  EXPECT_TRUE(r.history[1].val_loss.has_value());
  bool logged = false;
  for (const auto& l : logs) logged |= l.find("--eval-every 1 (the run had 0)") != std::string::npos;
  EXPECT_TRUE(logged);
  const nlohmann::json state = nlohmann::json::parse(read_file(dir.path() / "checkpoints/step-000004/state.json"));
  EXPECT_EQ(state.at("config").at("eval_every").get<int>(), 1);
  EXPECT_EQ(state.at("config").at("device").get<std::string>(), "cpu");
}

TEST(Trainer, LearningRateScheduleWarmsUpAndDecays) {
  TrainConfig c;
  c.steps = 1000;
  c.lr = 1.0;
  EXPECT_DOUBLE_EQ(learning_rate(c, 0), 0.01);
  EXPECT_NEAR(learning_rate(c, 50), 0.01 + 0.99 * 0.5, 1e-12);
  EXPECT_DOUBLE_EQ(learning_rate(c, 100), 1.0);
  EXPECT_NEAR(learning_rate(c, 999), 0.1, 1e-12);
  for (std::int64_t s = 100; s < 999; ++s) EXPECT_LE(learning_rate(c, s + 1), learning_rate(c, s));
}

TEST(Trainer, BadConfigurationsAreRejectedBeforeAnythingIsWritten) {
  testing::TempDir dir;
  const auto rejects = [&](auto mutate, const char* fragment) {
    TrainConfig c = small_cpu_run("quartet2", 2);
    c.out_dir = dir.str() + "/run";
    mutate(c);
    try {
      train(c);
      ADD_FAILURE() << "expected an error mentioning " << fragment;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
    EXPECT_FALSE(std::filesystem::exists(dir.str() + "/run")) << fragment;
    std::filesystem::remove_all(dir.str() + "/run");
  };
  rejects([](TrainConfig& c) { c.steps = 0; }, "--steps");
  rejects([](TrainConfig& c) { c.recipe = "fp3"; }, "fp3");
  rejects([](TrainConfig& c) { c.model_size = "7b"; }, "7b");
  rejects([](TrainConfig& c) { c.data = "/no/such/folder"; }, "/no/such/folder");
  rejects([](TrainConfig& c) { c.tokenizer = "sentencepiece"; }, "sentencepiece");
  rejects([](TrainConfig& c) { c.batch = 1000000; }, "fewer than one batch");
  rejects([](TrainConfig& c) { c.seq = 32; }, "multiple of 128");  // 2 x 32 tokens for RHT-128
  rejects([](TrainConfig& c) { c.model_overrides.n_heads = 3; }, "n_heads");
}

}  // namespace
}  // namespace quartet

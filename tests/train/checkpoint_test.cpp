// Corrupt, truncated or mismatched checkpoints get a clear error naming the file, and a failed
// resume leaves every file as it was.
#include "quartet/train/checkpoint.h"

#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>

#include "quartet/error.h"
#include "quartet/nn/llama.h"
#include "quartet/nn/recipe.h"
#include "quartet/train/trainer.h"
#include "quartet/util/files.h"
#include "quartet/util/safetensors.h"
#include "support/temp_dir.h"

namespace quartet {
namespace {

namespace fs = std::filesystem;

class Checkpoints : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    TrainConfig c;
    c.recipe = "bf16";
    c.steps = 2;
    c.batch = 2;
    c.seq = 64;
    c.eval_batches = 1;
    c.final_eval_batches = 1;
    c.out_dir = (dir_->path() / "run").string();
    train(c);
  }
  static void TearDownTestSuite() { delete dir_; }

  // A fresh copy of the good run, to corrupt.
  fs::path copy() {
    const fs::path to = dir_->path() / ("copy" + std::to_string(n_++));
    fs::copy(dir_->path() / "run", to, fs::copy_options::recursive);
    return to;
  }

  void expect_resume_error(const fs::path& run, const std::string& fragment) {
    const fs::path ckpt = run / "checkpoints" / "step-000002";
    std::map<std::string, std::string> before;
    for (const auto& e : fs::recursive_directory_iterator(run)) {
      if (e.is_regular_file()) before[e.path().string()] = read_file(e.path());
    }
    ResumeOptions o;
    o.steps = 3;
    try {
      resume(run.string(), o);
      ADD_FAILURE() << "expected an error containing '" << fragment << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
    for (const auto& [path, bytes] : before) EXPECT_EQ(read_file(path), bytes) << path << " changed";
    (void)ckpt;
  }

  static testing::TempDir* dir_;
  static inline int n_ = 0;
};

testing::TempDir* Checkpoints::dir_ = nullptr;

TEST_F(Checkpoints, TheGoodOneResumes) {
  const fs::path run = copy();
  EXPECT_EQ(resolve_checkpoint(run), run / "checkpoints" / "step-000002");
  ResumeOptions o;
  o.steps = 3;
  EXPECT_EQ(resume(run.string(), o).history.size(), 1u);
}

TEST_F(Checkpoints, TruncatedWeights) {
  const fs::path run = copy();
  const fs::path f = run / "checkpoints/step-000002/model.safetensors";
  const std::string bytes = read_file(f);
  write_file_atomic(f, bytes.substr(0, bytes.size() - 100));
  expect_resume_error(run, "model.safetensors");
}

TEST_F(Checkpoints, CorruptHeader) {
  const fs::path run = copy();
  const fs::path f = run / "checkpoints/step-000002/optimizer.safetensors";
  std::string bytes = read_file(f);
  bytes[8] = '#';  // the header's opening brace
  write_file_atomic(f, bytes);
  expect_resume_error(run, "not valid JSON");
  write_file_atomic(f, std::string("\xff\xff\xff\xff\xff\xff\xff\x7f", 8) + bytes.substr(8));
  expect_resume_error(run, "header length");
}

TEST_F(Checkpoints, MissingTensor) {
  const fs::path run = copy();
  const fs::path f = run / "checkpoints/step-000002/model.safetensors";
  SafeTensors t = read_safetensors(f);
  t.tensors.erase("model.norm.weight");
  write_safetensors(f, t);
  expect_resume_error(run, "model.norm.weight");
}

TEST_F(Checkpoints, MismatchedModelConfiguration) {
  const fs::path run = copy();
  const fs::path f = run / "checkpoints/step-000002/state.json";
  auto state = nlohmann::json::parse(read_file(f));
  state["config"]["model_overrides"]["ffn_hidden"] = 256;  // the weights were made with 512
  write_file_atomic(f, state.dump());
  expect_resume_error(run, "gate_up_proj");
}

TEST_F(Checkpoints, StateProblems) {
  const fs::path run = copy();
  const fs::path f = run / "checkpoints/step-000002/state.json";
  const std::string good = read_file(f);
  auto state = nlohmann::json::parse(good);
  state["version"] = 99;
  write_file_atomic(f, state.dump());
  expect_resume_error(run, "version 99");
  state = nlohmann::json::parse(good);
  state["data"]["fingerprint"] = "1:0";
  write_file_atomic(f, state.dump());
  expect_resume_error(run, "training data differs");
  write_file_atomic(f, "{");
  expect_resume_error(run, "state.json");
  fs::remove(f);
  expect_resume_error(run, "not a complete checkpoint: " + f.string() + " is missing");
  write_file_atomic(run / "checkpoints" / "step-000009", "a file");
  write_file_atomic(run / "checkpoints" / "latest", "step-000009\n");
  expect_resume_error(run, (run / "checkpoints" / "step-000009").string() + " is not a folder");
}

TEST_F(Checkpoints, StatesThatAreNotObjectsOrLackFieldsGetClearErrors) {
  // Found by the checkpoint fuzz target: these used to end in "internal error" (a JSON library
  // exception) or, for a fractional version, be read as version 1.
  const fs::path run = copy();
  const fs::path f = run / "checkpoints/step-000002/state.json";
  const auto good = nlohmann::json::parse(read_file(f));
  for (const char* text : {"1", "null", "\"x\"", "[]"}) {
    write_file_atomic(f, text);
    expect_resume_error(run, "is not a Quartet checkpoint state");
  }
  auto state = good;
  state["version"] = 1.5;
  write_file_atomic(f, state.dump());
  expect_resume_error(run, "version 1.5");
  state = good;
  state.erase("config");
  write_file_atomic(f, state.dump());
  expect_resume_error(run, "config");
}

TEST(ModelConfigJson, FractionsAndHugeNumbersAreRefusedNotConverted) {
  const nlohmann::json good = llama_config_to_hf_json(llama_preset("tiny", 256));
  EXPECT_EQ(llama_config_from_hf_json(good, "good.json").d_model, good["hidden_size"].get<std::int64_t>());
  for (const nlohmann::json& bad : {nlohmann::json(1.5), nlohmann::json(1e30), nlohmann::json(18446744073709551615ull),
                                    nlohmann::json("64")}) {
    nlohmann::json j = good;
    j["hidden_size"] = bad;
    try {
      llama_config_from_hf_json(j, "bad.json");
      ADD_FAILURE() << "hidden_size " << bad.dump() << " was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("hidden_size"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("bad.json"), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(llama_config_from_hf_json(nlohmann::json::array(), "array.json"), Error);
}

TEST_F(Checkpoints, LatestPointingNowhere) {
  const fs::path run = copy();
  write_file_atomic(run / "checkpoints/latest", "step-000099\n");
  expect_resume_error(run, "step-000099");
  EXPECT_THROW(resolve_checkpoint(dir_->path() / "nothing-here"), Error);
}

// `latest` named any path: "../other-run/..." or an absolute one resumed another run, whose
// metrics.jsonl the resume then truncated and whose checkpoints it replaced.
TEST_F(Checkpoints, LatestMustNameACheckpointOfThisRun) {
  const fs::path run = copy(), victim = copy();
  const auto victim_files = [&] {
    std::map<std::string, std::string> files;
    for (const auto& e : fs::recursive_directory_iterator(victim)) {
      if (e.is_regular_file()) files[e.path().string()] = read_file(e.path());
    }
    return files;
  };
  const auto before = victim_files();
  const std::string relative = "../../" + victim.filename().string() + "/checkpoints/step-000002";
  ASSERT_TRUE(fs::exists(run / "checkpoints" / relative / "state.json"));
  for (const std::string& name : {relative, (victim / "checkpoints" / "step-000002").string(), std::string("..")}) {
    write_file_atomic(run / "checkpoints/latest", name + "\n");
    expect_resume_error(run, "not a path");
    EXPECT_THROW(resolve_checkpoint(run), Error) << name;
  }
  // A symlink beside `latest` leads out of the run just the same.
  fs::create_directory_symlink(victim / "checkpoints" / "step-000002", run / "checkpoints" / "step-000003");
  write_file_atomic(run / "checkpoints/latest", "step-000003\n");
  expect_resume_error(run, "symlink");
  EXPECT_EQ(victim_files(), before);
}

// NaN or infinity in a checkpoint's tensors used to be loaded: sampling printed nothing,
// export copied the NaN, and a resume skipped every step and exited successfully.
TEST_F(Checkpoints, NonFiniteTensorsAreRefusedWithTheirNames) {
  const auto poison = [&](const fs::path& file, const std::string& tensor, double value) {
    SafeTensors t = read_safetensors(file);
    std::vector<double> values = tensor_values(t.tensors.at(tensor));
    values[values.size() / 2] = value;
    t.tensors[tensor] = make_f32_tensor(t.tensors.at(tensor).shape, values);
    write_safetensors(file, t);
  };
  const fs::path a = copy();
  poison(a / "checkpoints/step-000002/model.safetensors", "model.norm.weight", std::nan(""));
  expect_resume_error(a, "model.norm.weight");
  expect_resume_error(a, "non-finite");
  // Loading for sampling or export (weights only) refuses it too.
  const nlohmann::json state = read_checkpoint_state(a / "checkpoints/step-000002");
  const TrainConfig c = TrainConfig::from_json(state.at("config"));
  auto backend = make_cpu_backend();
  LlamaModel model(*backend, model_config(c, 257), make_recipe("bf16"), c.seed);
  try {
    load_checkpoint_tensors(a / "checkpoints/step-000002", *backend, model, nullptr);
    ADD_FAILURE() << "a NaN weight was loaded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("step-000002/model.safetensors"), std::string::npos) << e.what();
  }
  const fs::path b = copy();
  poison(b / "checkpoints/step-000002/optimizer.safetensors", "model.layers.0.mlp.down_proj.weight.exp_avg_sq",
         -INFINITY);
  expect_resume_error(b, "model.layers.0.mlp.down_proj.weight.exp_avg_sq");
  expect_resume_error(b, "optimizer.safetensors");
}

// A save killed mid-way (kill -9, power loss) left its temporary folder forever; the next run
// removes such folders, and only those whose process is gone.
TEST_F(Checkpoints, FoldersOfKilledSavesAreRemovedWhenTheRunGoesOn) {
  const fs::path run = copy();
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  ::waitpid(child, nullptr, 0);
  const std::string dead = std::to_string(child);
  const fs::path root = run / "checkpoints";
  const fs::path stale = root / (".step-000003.tmp-" + dead + "-Zx81Qa"), legacy = root / (".step-000003.tmp-" + dead);
  const fs::path live = root / (".step-000009.tmp-" + std::to_string(::getpid()) + "-Zx81Qa");
  for (const fs::path& p : {stale, legacy, live, root / "mine"}) {
    fs::create_directories(p);
    write_file_atomic(p / "model.safetensors", "torn");
  }
  ResumeOptions o;
  o.steps = 3;
  std::vector<std::string> logs;
  TrainCallbacks cb;
  cb.log = [&](const std::string& s) { logs.push_back(s); };
  resume(run.string(), o, cb);
  EXPECT_FALSE(fs::exists(stale));
  EXPECT_FALSE(fs::exists(legacy));
  EXPECT_TRUE(fs::exists(live / "model.safetensors"));
  EXPECT_TRUE(fs::exists(root / "mine" / "model.safetensors"));
  EXPECT_TRUE(fs::exists(root / "step-000003" / "state.json"));
  bool logged = false;
  for (const auto& l : logs) logged |= l.find(stale.filename().string()) != std::string::npos;
  EXPECT_TRUE(logged);
}

TEST_F(Checkpoints, NothingLeftToDo) {
  const fs::path run = copy();
  ResumeOptions o;
  o.steps = 2;
  EXPECT_THROW(resume(run.string(), o), Error);
}

TEST(SafeTensors, RoundTripAndStrictReading) {
  testing::TempDir dir;
  SafeTensors t;
  t.tensors["a"] = make_f32_tensor({2, 3}, {1, 2, 3, 4, 5, 6.5});
  t.tensors["b"] = make_f32_tensor({1}, {-1});
  t.metadata["format"] = "pt";
  write_safetensors(dir.path() / "x.safetensors", t);
  const SafeTensors back = read_safetensors(dir.path() / "x.safetensors");
  EXPECT_EQ(tensor_values(back.get("a", "F32", {2, 3})), (std::vector<double>{1, 2, 3, 4, 5, 6.5}));
  EXPECT_EQ(back.metadata.at("format"), "pt");
  EXPECT_THROW(back.get("a", "F32", {3, 2}), Error);
  EXPECT_THROW(back.get("c", "F32", {1}), Error);
  // The header length is a multiple of 8 and offsets are contiguous (the format's rules).
  const std::string bytes = read_file(dir.path() / "x.safetensors");
  std::uint64_t n;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ(n % 8, 0u);
  EXPECT_EQ(bytes.size(), 8 + n + 28);
}

}  // namespace
}  // namespace quartet

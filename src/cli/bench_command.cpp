// `quartet bench`: the GPU benchmark suite; prints one line per case and, with --json FILE,
// writes {"device", "commit", ..., "results": [...]}.
#include <fmt/format.h>

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "bench/gpu_bench.h"
#include "bench/train_dp.h"
#include "cli/commands.h"
#include "cli/own_arguments.h"
#include "quartet/backend/cuda.h"
#include "quartet/dist/environment.h"
#include "quartet/dist/launcher.h"
#include "quartet/error.h"
#include "quartet/util/files.h"

#ifndef QUARTET_GIT_COMMIT
#define QUARTET_GIT_COMMIT "unknown"
#endif

namespace quartet::cli {

namespace {

struct BenchOptions {
  GpuBenchOptions bench;
  std::string json;
  std::string recipes;
  std::string only;
  std::string sets;
  std::string models;
  std::string ops;
  std::int64_t gpus = 0;  // --gpus N: the training cases also on N GPUs (data parallel)
};

// Set in the ranks `bench --gpus N` starts (whose command line still holds --gpus N), with the
// file rank 0 writes its measurements to.
constexpr const char* kBenchRankRows = "QUARTET_BENCH_RANK_ROWS";

TrainBenchOptions train_options(const BenchOptions& o) {
  TrainBenchOptions t;
  t.models = o.bench.train_models;
  t.recipes = o.bench.recipes;
  t.quick = o.bench.quick;
  return t;
}

// A rank of `bench --gpus N`: measures, and rank 0 hands its figures to the launching process.
int run_bench_rank(const BenchOptions& o, const std::string& rows_file) {
  const std::optional<DistEnvironment> env = dist_environment_from_process();
  if (!env) throw Error(fmt::format("bench: {} is set but RANK/WORLD_SIZE/LOCAL_RANK are not", kBenchRankRows));
  const std::vector<DataParallelMeasurement> measured = run_train_dp_rank(train_options(o), *env);
  if (env->rank == 0) {
    nlohmann::json rows = nlohmann::json::array();
    for (const DataParallelMeasurement& m : measured) rows.push_back(m.to_json());
    write_file_atomic(rows_file, rows.dump(2) + "\n");
  }
  return 0;
}

// `bench --only train --gpus N`: the N ranks first (this process has not touched the GPUs, whose
// memory they need), then the one-GPU cases here; the rows of both, and one train-dp row per
// case comparing them.
nlohmann::json run_data_parallel_bench(BenchOptions& o, const std::function<void(const std::string&)>& note) {
  const std::filesystem::path rows_file =
      std::filesystem::temp_directory_path() / fmt::format("quartet-bench-gpus-{}.json", ::getpid());
  LocalLaunch launch;
  launch.args = own_arguments();
  launch.processes = static_cast<int>(o.gpus);
  launch.extra_environment[kBenchRankRows] = rows_file.string();
  launch.log = [](const std::string& line) { fmt::print(stderr, "quartet: {}\n", line); };
  note(fmt::format("train-dp: {} ranks, one per GPU", o.gpus));
  const int status = launch_local(launch);
  if (status != 0) throw Error(fmt::format("bench: the {}-GPU ranks failed (status {}; their messages are above)", o.gpus, status));
  std::vector<DataParallelMeasurement> measured;
  try {
    for (const nlohmann::json& j : nlohmann::json::parse(read_file(rows_file))) {
      measured.push_back(DataParallelMeasurement::from_json(j));
    }
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("bench: {} (rank 0's measurements) is not JSON: {}", rows_file.string(), e.what()));
  }
  std::filesystem::remove(rows_file);
  nlohmann::json rows = run_gpu_benchmarks(o.bench, note);
  for (const DataParallelMeasurement& m : measured) {
    double one_gpu = 0;
    for (const nlohmann::json& r : rows) {
      if (r.value("case", "") == fmt::format("train/{}/{}", m.recipe, m.model)) one_gpu = r.at("tokens_per_s");
    }
    const nlohmann::json row = data_parallel_row(m, one_gpu);
    note(fmt::format("{}: {:.0f} tokens/s ({:.0f} per GPU, {:.1f}% of one GPU's); optimizer state {:.1f}% of unsharded",
                     row.at("case").get<std::string>(), row.at("tokens_per_s").get<double>(),
                     row.at("tokens_per_s_per_gpu").get<double>(), 100 * row.at("scaling_efficiency").get<double>(),
                     100 * row.at("optimizer_fraction").get<double>()));
    rows.push_back(row);
  }
  return rows;
}

}  // namespace

Command add_bench_command(CLI::App& parent) {
  auto o = std::make_shared<BenchOptions>();
  CLI::App* app = parent.add_subcommand(
      "bench", "GPU performance suite: quantizers, GEMMs, linear layers and model operations, end-to-end training");
  app->add_option("--json", o->json, "write the results as JSON to this file");
  app->add_flag("--quick", o->bench.quick, "small shapes, few repetitions: a smoke test, not a measurement");
  app->add_option("--only", o->only,
                  "comma-separated sections to run: quantize, gemm, linear, ops, train (default: all but train)");
  app->add_option("--recipes", o->recipes,
                  "comma-separated recipes for the linear-layer and training cases (bf16 is always included)");
  app->add_option("--models", o->models, "comma-separated models for the training cases: 124m, 1b (default: both)");
  app->add_option("--ops", o->ops,
                  "comma-separated operations for the ops cases (a name part: attention, gemm, rmsnorm, ...)");
  app->add_option("--pytorch", o->bench.pytorch_script,
                  "the PyTorch reference trainer (bench/pytorch_reference.py) to run beside the training cases");
  app->add_option("--reps", o->bench.reps, "exactly this many timed repetitions per case after one warm-up (for profilers)")
      ->check(CLI::Range(1, 1000000));
  app->add_option("--gpus", o->gpus,
                  "with --only train: also run the training cases data-parallel on N GPUs of this node and report "
                  "tokens/s per GPU, scaling efficiency against one GPU and optimizer memory per rank");
  app->add_option("--trace-dir", o->bench.trace_dir,
                  "with --only train: record the GPU's activity over a few more steps of each of our training cases "
                  "(CUPTI); write each timeline as a Chrome trace into this folder and its busy and idle time per step "
                  "into the case's row");
  app->add_option("--sets", o->sets, "comma-separated shape sets for the linear-layer cases: 800M, 7B (default: both)");

  Command command;
  command.app = app;
  command.run = [o]() {
    if (!o->recipes.empty()) {
      o->bench.recipes = {"bf16"};
      std::stringstream ss(o->recipes);
      for (std::string r; std::getline(ss, r, ',');) {
        if (r.empty()) throw Error(fmt::format("--recipes '{}' has an empty entry", o->recipes));
        if (r != "bf16") o->bench.recipes.push_back(r);
      }
    }
    if (!o->only.empty()) {
      std::stringstream ss(o->only);
      for (std::string section; std::getline(ss, section, ',');) {
        if (section != "quantize" && section != "gemm" && section != "linear" && section != "ops" && section != "train") {
          throw Error(
              fmt::format("--only: unknown section '{}' (expected quantize, gemm, linear, ops or train)", section));
        }
        o->bench.only.push_back(section);
      }
    }
    if (!o->sets.empty()) {
      o->bench.sets.clear();
      std::stringstream ss(o->sets);
      for (std::string set; std::getline(ss, set, ',');) {
        if (set.empty()) throw Error(fmt::format("--sets '{}' has an empty entry", o->sets));
        if (set != "800M" && set != "7B") throw Error(fmt::format("--sets: unknown shape set '{}' (expected 800M or 7B)", set));
        o->bench.sets.push_back(set);
      }
      if (o->sets.back() == ',') throw Error(fmt::format("--sets '{}' has an empty entry", o->sets));
      if (!o->bench.wants("linear")) throw Error("--sets chooses the linear-layer cases, which --only leaves out");
    }
    if (!o->models.empty()) {
      o->bench.train_models.clear();
      std::stringstream ss(o->models);
      for (std::string m; std::getline(ss, m, ',');) {
        if (m != "124m" && m != "1b") throw Error(fmt::format("--models: unknown model '{}' (expected 124m or 1b)", m));
        o->bench.train_models.push_back(m);
      }
      if (!o->bench.wants("train")) throw Error("--models chooses the training cases, which --only leaves out");
    }
    if (!o->ops.empty()) {
      std::stringstream ss(o->ops);
      for (std::string name; std::getline(ss, name, ',');) {
        if (name.empty()) throw Error(fmt::format("--ops '{}' has an empty entry", o->ops));
        o->bench.ops.push_back(name);
      }
      if (!o->bench.wants("ops")) throw Error("--ops chooses the operation cases, which --only leaves out");
    }
    if (!o->bench.pytorch_script.empty() && !o->bench.wants("train")) {
      throw Error("--pytorch runs beside the training cases, which --only leaves out (add --only train)");
    }
    if (!o->bench.trace_dir.empty()) {
      if (!o->bench.wants("train")) throw Error("--trace-dir traces the training cases, which --only leaves out (add --only train)");
      std::error_code ec;
      std::filesystem::create_directories(o->bench.trace_dir, ec);
      if (ec || !std::filesystem::is_directory(o->bench.trace_dir)) {
        throw Error(fmt::format("--trace-dir: cannot make the folder {}{}", o->bench.trace_dir,
                                ec ? " (" + ec.message() + ")" : " (a file of that name is in the way)"));
      }
      cuda_activity_check();  // before minutes of measurements, not after the first case
    }
    if (o->gpus != 0) check_data_parallel_bench(o->gpus, o->bench.only, o->bench.pytorch_script);
    if (const char* rows_file = std::getenv(kBenchRankRows); rows_file != nullptr && o->gpus > 0) {
      return run_bench_rank(*o, rows_file);
    }
    if (o->gpus > 0 && std::getenv("RANK") != nullptr) {
      throw Error("--gpus starts its own ranks, but RANK is set (torchrun, Slurm): run bench --gpus outside a launcher");
    }
    const auto print = [](const std::string& line) { fmt::print("{}\n", line); };
    nlohmann::json rows;
    std::string device;
    if (o->gpus > 0) {  // the ranks first: this process touches no GPU before they end
      rows = run_data_parallel_bench(*o, print);
      device = fmt::format("{} x {}", o->gpus, cuda_device_description());
      fmt::print("device: {}\n", device);
    } else {
      device = cuda_device_description();
      fmt::print("device: {}\n", device);
      rows = run_gpu_benchmarks(o->bench, print);
    }
    if (!o->json.empty()) {
      const auto now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
      char when[32];
      std::strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
      const nlohmann::json report = {{"device", device},     {"commit", QUARTET_GIT_COMMIT},
                                     {"date", when},         {"quick", o->bench.quick},
                                     {"gpus", o->gpus > 0 ? o->gpus : 1},
                                     {"results", rows}};
      write_file_atomic(o->json, report.dump(2) + "\n");
      fmt::print("wrote {}\n", o->json);
    }
    return 0;
  };
  return command;
}

}  // namespace quartet::cli

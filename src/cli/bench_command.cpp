// `quartet bench`: the GPU benchmark suite; prints one line per case and, with --json FILE,
// writes {"device", "commit", ..., "results": [...]}.
#include <fmt/format.h>

#include <chrono>
#include <ctime>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "bench/gpu_bench.h"
#include "cli/commands.h"
#include "quartet/backend/cuda.h"
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
};

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
    const std::string device = cuda_device_description();
    fmt::print("device: {}\n", device);
    const nlohmann::json rows = run_gpu_benchmarks(o->bench, [](const std::string& line) { fmt::print("{}\n", line); });
    if (!o->json.empty()) {
      const auto now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
      char when[32];
      std::strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
      const nlohmann::json report = {{"device", device},     {"commit", QUARTET_GIT_COMMIT},
                                     {"date", when},         {"quick", o->bench.quick},
                                     {"results", rows}};
      write_file_atomic(o->json, report.dump(2) + "\n");
      fmt::print("wrote {}\n", o->json);
    }
    return 0;
  };
  return command;
}

}  // namespace quartet::cli

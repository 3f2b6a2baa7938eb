// `quartet bench --only train`: end-to-end training throughput of the trainer's own step
// (TrainStep: forward, backward, AdamW, one host synchronisation) per recipe and model, with
// tokens/s, ms per step, MFU (llm.c's count) and peak GPU memory; beside it, in the same run, the
// PyTorch reference trainer of the same model (bench/pytorch_reference.py), when given.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace quartet {

struct TrainBenchOptions {
  std::vector<std::string> models = {"124m", "1b"};
  std::vector<std::string> recipes = {"bf16", "quartet2", "nvidia", "tetrajet2", "quartet1"};
  bool quick = false;            // a few steps of each: a smoke test, not a measurement
  std::string pytorch_script;    // bench/pytorch_reference.py; empty: no PyTorch rows
  std::string python = "python3";
  // Not empty: after its timed steps, each of our cases runs kTraceSteps more the same way while
  // the GPU's activity is recorded (quartet/backend/cuda.h: CUPTI), and one before them that the
  // summary leaves out (its first activity waits for the recorder), writes the Chrome trace
  // <trace_dir>/<recipe>-<model>.trace.json and adds the timeline's summary to its row as
  // "device_timeline" (bench/device_timeline.h): busy and idle device time per step, and the
  // kernels by time and by the idle time before them. The timed figures are not traced.
  std::string trace_dir;
};
constexpr int kTraceSteps = 5;

// The batch and sequence each model is measured at: 124m 8 x 1024, 1b 8 x 2048.
struct TrainBenchShape {
  std::int64_t batch = 8, seq = 1024;
};
TrainBenchShape train_bench_shape(const std::string& model);

// FLOPs per token by llm.c's count: 6 N + 6 L d T (N all parameters, L layers, d width, T seq).
double training_flops_per_token(std::int64_t parameters, std::int64_t layers, std::int64_t d_model, std::int64_t seq);

// Rows {"case": "train/<recipe>/<model>" or "train/pytorch/<model>", "tokens_per_s", "ms_per_step",
// "mfu", "peak_gib", "flops_per_token", "peak_tflops", ratios, and with a trace_dir
// "device_timeline"}. Throws Error without a GPU.
nlohmann::json run_train_benchmarks(const TrainBenchOptions& options, const std::function<void(const nlohmann::json&)>& note);

}  // namespace quartet

// `quartet bench`: the GPU performance suite (quantizers in TB/s next to the copy ceiling,
// GEMMs in TFLOP/s next to cuBLAS BF16, the linear layers of a transformer block per recipe as
// a ratio to BF16 at performance.md's "800M" and "7B" shape sets, every model operation against
// its ceiling (ops_bench.h), and end-to-end training per recipe beside PyTorch (train_bench.h)).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace quartet {

struct GpuBenchOptions {
  bool quick = false;  // smaller shapes and fewer repetitions (a smoke test, not a measurement)
  int reps = 0;        // > 0: exactly this many timed repetitions per case (after one warm-up), for profilers
  std::vector<std::string> recipes = {"bf16", "nvidia", "tetrajet2", "quartet2", "quartet1"};
  // Sections to run ("quantize" (with requant), "gemm", "linear", "ops", "train"); empty: all
  // but "train" (minutes of training runs: asked for by name). The copy ceiling always runs.
  std::vector<std::string> only;
  // The "train" section: models, and the PyTorch reference script to run beside them (empty:
  // none).
  std::vector<std::string> train_models = {"124m", "1b"};
  std::string pytorch_script;
  // Not empty: each of our training cases also records a few more steps' GPU activity and writes
  // its timeline here (train_bench.h).
  std::string trace_dir;
  // The "ops" section: only the operations whose name contains one of these (empty: all).
  std::vector<std::string> ops;
  // Shape sets of the linear-layer cases (performance.md): "800M", "7B".
  std::vector<std::string> sets = {"800M", "7B"};

  bool wants(const std::string& section) const {
    if (only.empty()) return section != "train";
    for (const std::string& s : only) {
      if (s == section) return true;
    }
    return false;
  }
};

// One JSON object per case (at least "case" and "median_ms", and "tbps"/"copy_tbps",
// "tflops"/"bf16_tflops" or "ratio_to_bf16"). Throws Error without a usable GPU.
nlohmann::json run_gpu_benchmarks(const GpuBenchOptions& options, const std::function<void(const std::string&)>& progress);

}  // namespace quartet

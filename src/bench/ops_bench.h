// The performance mode of the operation table (op_cases.h), in the manner of llm.c's kernel
// lab: every Backend operation at the benchmark shapes of its entry, timed on the GPU, against
// the ceilings measured in the same run (device-to-device copy, cuBLAS BF16 GEMM).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "quartet/backend/backend.h"

namespace quartet {

// For each table entry and each of its benchmark shapes (quick: the first, smallest, only):
// builds the inputs on `gpu` (a CUDA backend), runs the operation once per copy of its inputs
// (a warm-up), then times repetitions with CUDA events until min_reps are done and about
// budget_s seconds are spent (at most max_reps; at least 20 unless quick), and reports the
// median through note(), one row per case:
//   {"case": "op/<name>/<shape label>/<dtype>", "median_ms", "reps", "copies", "shape",
//    memory-bound: "bytes", "tbps", "ratio_to_copy" (if copy_tbps > 0);
//    compute-bound (attention, gemm): "flops", "tflops", "ratio_to_bf16_gemm" (if bf16_gemm_tflops > 0)}
// A case that fails (out of memory, an error the GPU recorded) gives {"case", "error"} and the
// others still run. `names`, when not empty, keeps only the entries whose name contains one of
// them. Returns all rows. Built only with the CUDA backend.
nlohmann::json run_ops_benchmarks(Backend& gpu, bool quick, int min_reps, int max_reps, double budget_s, double copy_tbps,
                                  double bf16_gemm_tflops, const std::vector<std::string>& names,
                                  const std::function<void(const nlohmann::json&)>& note);

}  // namespace quartet

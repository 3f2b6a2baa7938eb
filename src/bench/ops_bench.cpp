// The operation table's performance mode (ops_bench.h). Each case's inputs are built on the GPU
// from the table's builder; enough copies of them are made that cycling through the copies
// keeps every repetition's data out of L2 (as gpu_bench.cpp rotates its inputs), so the
// memory-bound operations are measured from DRAM, as they run in a training step.
#include "bench/ops_bench.h"

// Compiled only with the CUDA backend (src/CMakeLists.txt): CUDA events time the operations.
#if __has_include(<cuda_runtime_api.h>)

#include <cuda_runtime_api.h>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "bench/op_cases.h"
#include "bench/spin_length.h"
#include "quartet/backend/cuda.h"
#include "quartet/error.h"

namespace quartet {

namespace {

void check_cuda(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throw Error(fmt::format("ops benchmark: {}: {}", what, cudaGetErrorString(status)));
}

// GPU time of the work a function issues, between two events on the legacy default stream. The
// CUDA backend issues its work there (or on blocking streams, which the legacy default stream
// orders against), so the events bracket exactly that work.
class EventTimer {
 public:
  EventTimer() {
    check_cuda(cudaEventCreate(&start_), "cudaEventCreate");
    check_cuda(cudaEventCreate(&stop_), "cudaEventCreate");
  }
  ~EventTimer() {
    cudaEventDestroy(start_);
    cudaEventDestroy(stop_);
  }
  EventTimer(const EventTimer&) = delete;
  EventTimer& operator=(const EventTimer&) = delete;

  double milliseconds(const std::function<void()>& work) {
    check_cuda(cudaEventRecord(start_, nullptr), "cudaEventRecord");
    work();
    check_cuda(cudaEventRecord(stop_, nullptr), "cudaEventRecord");
    check_cuda(cudaEventSynchronize(stop_), "the timed operation");
    float ms = 0;
    check_cuda(cudaEventElapsedTime(&ms, start_, stop_), "cudaEventElapsedTime");
    return ms;
  }

 private:
  cudaEvent_t start_ = nullptr, stop_ = nullptr;
};

// Copies of a case's inputs such that the others' data, touched between two uses of one copy,
// are at least twice the L2 cache; one copy when the case's own traffic is 8 times the cache.
int copies_out_of_l2(double bytes) {
  int device = 0, l2_bytes = 0;
  check_cuda(cudaGetDevice(&device), "cudaGetDevice");
  check_cuda(cudaDeviceGetAttribute(&l2_bytes, cudaDevAttrL2CacheSize, device), "cudaDeviceGetAttribute");
  const double l2 = static_cast<double>(l2_bytes);
  if (bytes <= 0 || bytes >= 8 * l2) return 1;
  return std::min(16, 1 + static_cast<int>(std::ceil(2 * l2 / bytes)));
}

struct Timing {
  double median_ms = 0;
  int reps = 0;
};

// A warm-up run of every copy, then repetitions cycling through the copies until min_reps are
// done and about budget_s seconds of GPU time are spent (at most max_reps): the median. Each
// repetition is queued behind a GPU spin of twice the host's time to queue the first copy once
// more (0.5 to 200 ms), as gpu_bench.cpp's cases are, so that the events time the device's work
// and not the launch latency.
Timing time_copies(const std::vector<ops::OpRun>& copies, int min_reps, int max_reps, double budget_s) {
  for (const ops::OpRun& c : copies) c.run();
  check_cuda(cudaDeviceSynchronize(), "the warm-up");
  const double spin_ms = spin_ms_for_queueing(copies.front().run);
  check_cuda(cudaDeviceSynchronize(), "the warm-up");
  EventTimer timer;
  std::vector<double> times;
  double spent_s = 0;
  for (int i = 0; i < max_reps && (i < min_reps || spent_s < budget_s); ++i) {
    cuda_spin(spin_ms);
    const double ms = timer.milliseconds(copies[static_cast<std::size_t>(i) % copies.size()].run);
    times.push_back(ms);
    spent_s += ms * 1e-3;
  }
  std::sort(times.begin(), times.end());
  return {times[times.size() / 2], static_cast<int>(times.size())};
}

struct Limits {
  int min_reps, max_reps;
  double budget_s, copy_tbps, bf16_gemm_tflops;
};

nlohmann::json benchmark_case(Backend& gpu, const ops::OpEntry& entry, const ops::OpShape& shape, const Limits& limits) {
  const ops::OpCost cost = entry.cost(shape);
  const int count = copies_out_of_l2(cost.bytes);
  std::vector<ops::OpRun> copies;
  for (int i = 0; i < count; ++i) {
    ops::CaseInputs inputs(ops::case_seed(entry, shape) + static_cast<std::uint64_t>(i), /*for_comparison=*/false);
    copies.push_back(entry.build(gpu, shape, inputs));
  }
  const Timing t = time_copies(copies, limits.min_reps, limits.max_reps, limits.budget_s);
  gpu.raise_pending_errors();

  nlohmann::json row = {{"case", ops::case_name(entry, shape)}, {"median_ms", t.median_ms}, {"reps", t.reps},
                        {"copies", count},                     {"shape", shape.to_json()}};
  const double seconds = t.median_ms * 1e-3;
  if (cost.flops > 0) {
    const double tflops = cost.flops / seconds / 1e12;
    row["flops"] = cost.flops;
    row["tflops"] = tflops;
    if (limits.bf16_gemm_tflops > 0) row["ratio_to_bf16_gemm"] = tflops / limits.bf16_gemm_tflops;
  } else {
    const double tbps = cost.bytes / seconds / 1e12;
    row["bytes"] = cost.bytes;
    row["tbps"] = tbps;
    if (limits.copy_tbps > 0) row["ratio_to_copy"] = tbps / limits.copy_tbps;
  }
  return row;
}

}  // namespace

nlohmann::json run_ops_benchmarks(Backend& gpu, bool quick, int min_reps, int max_reps, double budget_s, double copy_tbps,
                                  double bf16_gemm_tflops, const std::vector<std::string>& names,
                                  const std::function<void(const nlohmann::json&)>& note) {
  if (gpu.device() != Device::cuda) throw Error(fmt::format("ops benchmark: needs the CUDA backend, got '{}'", gpu.name()));
  // A measurement takes the median of at least 20 repetitions; a quick run is a smoke test.
  const int least = quick ? std::max(1, min_reps) : std::max(20, min_reps);
  const Limits limits{least, std::max(least, max_reps), budget_s, copy_tbps, bf16_gemm_tflops};
  nlohmann::json rows = nlohmann::json::array();
  const auto emit = [&](nlohmann::json row) {
    if (note) note(row);
    rows.push_back(std::move(row));
  };
  const auto wanted = [&](const std::string& name) {
    if (names.empty()) return true;
    for (const std::string& n : names) {
      if (name.find(n) != std::string::npos) return true;
    }
    return false;
  };
  for (const ops::OpEntry& entry : ops::op_table()) {
    if (!wanted(entry.name)) continue;
    const std::size_t shapes = quick ? std::min<std::size_t>(1, entry.bench_shapes.size()) : entry.bench_shapes.size();
    for (std::size_t i = 0; i < shapes; ++i) {
      const ops::OpShape& shape = entry.bench_shapes[i];
      try {
        emit(benchmark_case(gpu, entry, shape, limits));
      } catch (const Error& e) {
        emit({{"case", ops::case_name(entry, shape)}, {"error", e.what()}});
      }
    }
  }
  return rows;
}

}  // namespace quartet

#endif  // __has_include(<cuda_runtime_api.h>)

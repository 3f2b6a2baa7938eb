// How long the GPU spin before each timed repetition lasts (cuda_spin), shared by the benchmark
// suites: twice the host's time to queue one repetition, at least 0.5 ms and at most 200, as
// bench/torch_linear_bench.py takes its sleep.
#pragma once

#include <algorithm>
#include <chrono>
#include <functional>

namespace quartet {

// Runs `queue_once` (a warm repetition, already past its first-use costs) and returns the spin
// its host time asks for. The caller synchronises afterwards.
inline double spin_ms_for_queueing(const std::function<void()>& queue_once) {
  const auto issued = std::chrono::steady_clock::now();
  queue_once();
  const double host_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - issued).count();
  return std::min(std::max(2.0 * host_ms, 0.5), 200.0);
}

}  // namespace quartet

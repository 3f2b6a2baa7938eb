// A kernel that keeps the GPU busy for a while: the benchmarks queue each timed repetition
// behind one, so that the repetition's kernels are all queued before the GPU reaches them and the
// events time the device's work, not the host's issuing of it (bench/torch_linear_bench.py does
// the same with torch.cuda._sleep).
#include <cuda_runtime.h>

#include <cmath>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/dependent_launch.cuh"
#include "quartet/backend/cuda.h"
#include "quartet/error.h"

namespace quartet {

namespace cuda {
namespace {

// Cycles of the SM clock per millisecond at 2 GHz, above any clock of the GPUs in use: at a
// lower clock the spin only lasts longer, which is harmless before an untimed start.
constexpr double kCyclesPerMs = 2.0e6;

__global__ void spin_kernel(long long cycles) {
  wait_for_upstream_grids();
  const long long start = clock64();
  while (clock64() - start < cycles) {
  }
}

}  // namespace
}  // namespace cuda

void cuda_spin(double ms) {
  if (!(ms >= 0.0 && ms <= 1000.0)) throw Error("cuda_spin: ms must lie in [0, 1000]");
  cuda::launch_dependent(cuda::spin_kernel, 1, 1, 0, nullptr, static_cast<long long>(std::ceil(ms * cuda::kCyclesPerMs)));
  QUARTET_CUDA_LAUNCHED();
}

}  // namespace quartet

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

// The device's global timer in nanoseconds (not the SM clock, whose rate varies by GPU and load).
__device__ __forceinline__ unsigned long long global_nanoseconds() {
  unsigned long long ns;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(ns));
  return ns;
}

__global__ void spin_kernel(unsigned long long nanoseconds) {
  wait_for_upstream_grids();
  const unsigned long long start = global_nanoseconds();
  while (global_nanoseconds() - start < nanoseconds) {
  }
}

}  // namespace
}  // namespace cuda

void cuda_spin(double ms) {
  if (!(ms >= 0.0 && ms <= 1000.0)) throw Error("cuda_spin: ms must lie in [0, 1000]");
  cuda::launch_dependent(cuda::spin_kernel, 1, 1, 0, nullptr, static_cast<unsigned long long>(std::ceil(ms * 1e6)));
  QUARTET_CUDA_LAUNCHED();
}

}  // namespace quartet

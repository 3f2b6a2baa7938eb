// Programmatic dependent launch (sm_90 and later): a kernel launched with it may be scheduled
// while the kernel before it in the stream is still finishing, so that its launch latency
// overlaps that kernel's tail instead of following it. Such a kernel must call
// wait_for_upstream_grids() before it reads anything an earlier kernel wrote, and before it
// exits (else a kernel after it could start before the earlier one ended); it then sees all of
// the earlier kernel's writes. allow_downstream_launch() lets the next kernel be scheduled.
// On older devices, and for kernels launched without the attribute, both are no-ops.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <utility>

#include "backend/cuda/cuda_check.h"

namespace quartet::cuda {

__device__ __forceinline__ void wait_for_upstream_grids() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void allow_downstream_launch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// Lets `kernel` be launched with `bytes` of dynamic shared memory (above the 48 KiB default).
template <class Kernel>
void allow_shared_bytes(Kernel kernel, int bytes) {
  QUARTET_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
}

// Whether kernels that support it are launched as dependents: on unless the environment sets
// QUARTET_DEPENDENT_LAUNCH=0 (to measure what it brings, or to rule it out).
bool dependent_launch_enabled();

// kernel<<<grid, block, shared_bytes, stream>>>(args...), as a dependent launch when enabled. The
// kernel must follow the rules above: every kernel of this backend starts with
// wait_for_upstream_grids() and is launched this way (the FP64 reference attention for tests and the
// cached attention of sampling excepted: plain launches, which wait for everything before them).
template <class... Params, class... Args>
void launch_dependent(void (*kernel)(Params...), dim3 grid, dim3 block, std::size_t shared_bytes, cudaStream_t stream,
                      Args&&... args) {
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = shared_bytes;
  config.stream = stream;
  cudaLaunchAttribute attribute{};
  attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute.val.programmaticStreamSerializationAllowed = 1;
  config.attrs = &attribute;
  config.numAttrs = dependent_launch_enabled() ? 1 : 0;
  QUARTET_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...));
}

}  // namespace quartet::cuda

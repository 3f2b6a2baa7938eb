#include "backend/cuda/device_memory.h"

#include <fmt/format.h>

#include "backend/cuda/cuda_check.h"
#include "quartet/error.h"

namespace quartet::cuda {

namespace {

double gib(std::uint64_t bytes) { return static_cast<double>(bytes) / (1024.0 * 1024.0 * 1024.0); }

// What a user needs when the GPU's memory runs out: how much was asked for, how much the device
// has and how much this process holds, and the flags that lower it.
[[noreturn]] void throw_out_of_memory(std::size_t bytes) {
  cudaGetLastError();  // an allocation failure is not sticky: clear it so that later calls work
  std::size_t free = 0, total = 0;
  const bool have_info = cudaMemGetInfo(&free, &total) == cudaSuccess;
  std::uint64_t held = 0;
  int device = 0;
  cudaMemPool_t pool = nullptr;
  if (cudaGetDevice(&device) == cudaSuccess && cudaDeviceGetDefaultMemPool(&pool, device) == cudaSuccess) {
    cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReservedMemCurrent, &held);
  }
  throw Error(fmt::format(
      "out of GPU memory: {:.2f} GiB more were needed{}; use fewer tokens at once or a smaller model (train: lower "
      "--batch, raising --grad-accum to keep the tokens per step, or --seq, or choose a smaller --model)",
      gib(bytes),
      have_info ? fmt::format(" ({:.2f} GiB free of {:.2f} GiB; this process's memory pool holds {:.2f} GiB)", gib(free),
                              gib(total), gib(held))
                : std::string()));
}

}  // namespace

// Stream-ordered allocations on the default stream: a buffer freed while kernels that use it
// are still queued is released only after them, and freeing never synchronises the device.
std::shared_ptr<void> device_alloc(std::size_t bytes) {
  void* p = nullptr;
  const cudaError_t status = cudaMallocAsync(&p, bytes == 0 ? 16 : bytes, nullptr);
  if (status == cudaErrorMemoryAllocation) throw_out_of_memory(bytes);
  QUARTET_CUDA_CHECK(status);
  return std::shared_ptr<void>(p, [](void* q) { cudaFreeAsync(q, nullptr); });
}

void keep_freed_memory_pooled() {
  int device = 0;
  QUARTET_CUDA_CHECK(cudaGetDevice(&device));
  cudaMemPool_t pool = nullptr;
  QUARTET_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, device));
  std::uint64_t threshold = ~std::uint64_t{0};
  QUARTET_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold));
}

}  // namespace quartet::cuda

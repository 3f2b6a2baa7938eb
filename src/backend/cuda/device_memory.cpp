#include "backend/cuda/device_memory.h"

#include "backend/cuda/cuda_check.h"

namespace quartet::cuda {

// Stream-ordered allocations on the default stream: a buffer freed while kernels that use it
// are still queued is released only after them, and freeing never synchronises the device.
std::shared_ptr<void> device_alloc(std::size_t bytes) {
  void* p = nullptr;
  QUARTET_CUDA_CHECK(cudaMallocAsync(&p, bytes == 0 ? 16 : bytes, nullptr));
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

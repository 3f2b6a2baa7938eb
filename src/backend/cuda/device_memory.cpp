#include "backend/cuda/device_memory.h"

#include "backend/cuda/cuda_check.h"

namespace quartet::cuda {

std::shared_ptr<void> device_alloc(std::size_t bytes) {
  void* p = nullptr;
  QUARTET_CUDA_CHECK(cudaMalloc(&p, bytes == 0 ? 16 : bytes));
  return std::shared_ptr<void>(p, [](void* q) { cudaFree(q); });
}

}  // namespace quartet::cuda

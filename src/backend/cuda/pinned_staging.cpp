#include "backend/cuda/pinned_staging.h"

#include <cstring>

#include "backend/cuda/cuda_check.h"

namespace quartet::cuda {

PinnedStaging::~PinnedStaging() {
  for (Slot& s : slots_) {
    if (s.done != nullptr) {
      cudaEventSynchronize(s.done);
      cudaEventDestroy(s.done);
    }
    if (s.host != nullptr) cudaFreeHost(s.host);
  }
}

void PinnedStaging::upload(void* dst, const void* src, std::size_t bytes, cudaStream_t stream) {
  if (bytes == 0) return;
  Slot& s = slots_[static_cast<std::size_t>(next_)];
  next_ = (next_ + 1) % kSlots;
  if (s.done == nullptr) {
    QUARTET_CUDA_CHECK(cudaEventCreateWithFlags(&s.done, cudaEventDisableTiming));
  } else {
    QUARTET_CUDA_CHECK(cudaEventSynchronize(s.done));  // the slot's previous copy has left it
  }
  if (s.capacity < bytes) {
    if (s.host != nullptr) QUARTET_CUDA_CHECK(cudaFreeHost(s.host));
    s.host = nullptr;
    s.capacity = 0;
    QUARTET_CUDA_CHECK(cudaMallocHost(&s.host, bytes));
    s.capacity = bytes;
  }
  std::memcpy(s.host, src, bytes);
  QUARTET_CUDA_CHECK(cudaMemcpyAsync(dst, s.host, bytes, cudaMemcpyHostToDevice, stream));
  QUARTET_CUDA_CHECK(cudaEventRecord(s.done, stream));
}

}  // namespace quartet::cuda

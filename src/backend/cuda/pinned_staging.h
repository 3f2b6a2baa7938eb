// Host-to-device uploads that do not wait for the device: the data is copied into one of a few
// page-locked buffers and sent with an asynchronous copy, so the caller's memory may be reused
// at once and the step's kernels already queued keep running.
#pragma once

#include <cuda_runtime_api.h>

#include <array>
#include <cstddef>

namespace quartet::cuda {

class PinnedStaging {
 public:
  PinnedStaging() = default;
  ~PinnedStaging();
  PinnedStaging(const PinnedStaging&) = delete;
  PinnedStaging& operator=(const PinnedStaging&) = delete;

  // dst: device memory. Blocks only if the copy made kSlots uploads ago has not finished.
  void upload(void* dst, const void* src, std::size_t bytes, cudaStream_t stream);

 private:
  static constexpr int kSlots = 4;  // a step uploads inputs and targets; two steps in flight
  struct Slot {
    void* host = nullptr;
    std::size_t capacity = 0;
    cudaEvent_t done = nullptr;
  };
  std::array<Slot, kSlots> slots_{};
  int next_ = 0;
};

}  // namespace quartet::cuda

// Device allocations owned by shared_ptr (freed with cudaFree), and small helpers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

namespace quartet::cuda {

// Stream-ordered on the legacy default stream, where the backend launches (the attention
// backward also uses a side stream, ordered with events, see attention.cu): a
// buffer freed while kernels that use it are still queued is reused only after them. A
// backend that adds streams must pass its stream here.
std::shared_ptr<void> device_alloc(std::size_t bytes);

// Keep memory freed to the stream-ordered pool for reuse instead of returning it to the driver.
void keep_freed_memory_pooled();

// Whether 16-byte vector accesses may start at p.
inline bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

template <class T>
T* ptr(const std::shared_ptr<void>& p) {
  return static_cast<T*>(p.get());
}

}  // namespace quartet::cuda

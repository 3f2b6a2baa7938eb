// Device allocations owned by shared_ptr (freed with cudaFree), and small helpers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

namespace quartet::cuda {

std::shared_ptr<void> device_alloc(std::size_t bytes);

// Keep memory freed to the stream-ordered pool for reuse instead of returning it to the driver.
void keep_freed_memory_pooled();

template <class T>
T* ptr(const std::shared_ptr<void>& p) {
  return static_cast<T*>(p.get());
}

}  // namespace quartet::cuda

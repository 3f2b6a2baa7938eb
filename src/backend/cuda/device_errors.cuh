// Device side of device_errors.h.
#pragma once

#include <cstdint>

namespace quartet::cuda {

// Keeps the smallest position (the first bad row); the value rides in the low 32 bits.
__device__ __forceinline__ void record_data_error(unsigned long long* slot, std::int64_t position, std::int32_t value) {
  atomicMin(slot, (static_cast<unsigned long long>(position) << 32) | static_cast<std::uint32_t>(value));
}

}  // namespace quartet::cuda

// One thing a GPU ran (a kernel, a memset or a copy) with the device's own start and end times:
// what a timeline of a training step is made of (quartet/backend/cuda.h records them; the bench
// summarises them, bench/device_timeline.h). Plain data, no CUDA type.
#pragma once

#include <cstdint>
#include <string>

namespace quartet {

enum class DeviceActivityKind { kernel, memset, memcpy };

struct DeviceActivity {
  DeviceActivityKind kind = DeviceActivityKind::kernel;
  std::string name;        // the kernel's demangled name; "memset" or "memcpy <direction>"
  std::uint64_t start_ns = 0, end_ns = 0;  // the device's clock, in nanoseconds
  std::uint32_t stream = 0;
  std::uint64_t bytes = 0;  // memsets and copies
};

inline const char* device_activity_kind_name(DeviceActivityKind kind) {
  switch (kind) {
    case DeviceActivityKind::kernel: return "kernel";
    case DeviceActivityKind::memset: return "memset";
    case DeviceActivityKind::memcpy: return "memcpy";
  }
  return "unknown";
}

}  // namespace quartet

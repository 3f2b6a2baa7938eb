// The GPU's current SM and memory clocks, so that benchmark results say what clocks they were
// measured at (performance.md, "Protocol"): a power-limited GPU lowers its clocks under heavy
// GEMMs, which moves every ratio to a baseline.
#pragma once

#include <memory>
#include <optional>

namespace quartet {

struct GpuClocks {
  unsigned sm_mhz = 0;
  unsigned memory_mhz = 0;
};

// Reads the clocks of the current CUDA device through NVML, loaded at run time from the
// driver's libnvidia-ml.so.1 (no build dependency). read() is empty where NVML is missing or
// fails.
class GpuClockReader {
 public:
  GpuClockReader();
  ~GpuClockReader();
  GpuClockReader(const GpuClockReader&) = delete;
  GpuClockReader& operator=(const GpuClockReader&) = delete;

  std::optional<GpuClocks> read() const;

 private:
  struct Nvml;
  std::unique_ptr<Nvml> nvml_;
};

}  // namespace quartet

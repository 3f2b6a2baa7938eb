// The clock reader behind the bench rows' sm_clock_mhz / memory_clock_mhz (run on the GPU
// machine; skips without a GPU, or where the driver's NVML library cannot be loaded, in which
// case the bench leaves the columns out).
#include <gtest/gtest.h>

#include "bench/gpu_clocks.h"
#include "quartet/backend/cuda.h"

namespace quartet {
namespace {

TEST(GpuClocks, ReadsPlausibleClocksOfTheCurrentDevice) {
  if (!cuda_available()) GTEST_SKIP() << cuda_device_description();
  const GpuClockReader reader;
  const auto first = reader.read();
  if (!first) GTEST_SKIP() << "NVML (libnvidia-ml.so.1) is not loadable here: bench rows carry no clocks";
  // Every CUDA GPU so far runs its SMs between a few hundred MHz and 3 GHz; memory clocks
  // (reported per the memory type's convention) lie between a few hundred MHz and 20 GHz. A
  // wrong clock type, an unread field (0) or a garbage handle lands outside.
  EXPECT_GE(first->sm_mhz, 100u);
  EXPECT_LE(first->sm_mhz, 4000u);
  EXPECT_GE(first->memory_mhz, 100u);
  EXPECT_LE(first->memory_mhz, 20000u);
  // The reader is reused for every row of a run.
  const auto second = reader.read();
  ASSERT_TRUE(second.has_value());
  EXPECT_GE(second->sm_mhz, 100u);
}

}  // namespace
}  // namespace quartet

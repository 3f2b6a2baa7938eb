#include "bench/gpu_clocks.h"

#include <cuda_runtime_api.h>
#include <dlfcn.h>

namespace quartet {

// The few NVML entry points used, with the C ABI of nvml.h (return 0 is NVML_SUCCESS; clock
// types 1 and 2 are NVML_CLOCK_SM and NVML_CLOCK_MEM).
struct GpuClockReader::Nvml {
  using Device = void*;
  using Init = int (*)();
  using Shutdown = int (*)();
  using HandleByPciBusId = int (*)(const char*, Device*);
  using ClockInfo = int (*)(Device, int, unsigned*);

  void* library = nullptr;
  Shutdown shutdown = nullptr;
  ClockInfo clock_info = nullptr;
  Device device = nullptr;

  ~Nvml() {
    if (shutdown) shutdown();
    if (library) dlclose(library);
  }
};

GpuClockReader::GpuClockReader() {
  auto n = std::make_unique<Nvml>();
  n->library = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!n->library) return;
  const auto init = reinterpret_cast<Nvml::Init>(dlsym(n->library, "nvmlInit_v2"));
  const auto by_bus = reinterpret_cast<Nvml::HandleByPciBusId>(dlsym(n->library, "nvmlDeviceGetHandleByPciBusId_v2"));
  n->clock_info = reinterpret_cast<Nvml::ClockInfo>(dlsym(n->library, "nvmlDeviceGetClockInfo"));
  const auto shutdown = reinterpret_cast<Nvml::Shutdown>(dlsym(n->library, "nvmlShutdown"));
  if (!init || !by_bus || !n->clock_info || !shutdown || init() != 0) return;
  n->shutdown = shutdown;
  // The CUDA device by its PCI bus id, so that CUDA_VISIBLE_DEVICES cannot make NVML read
  // another GPU.
  int device = 0;
  char bus_id[32] = {};
  if (cudaGetDevice(&device) != cudaSuccess || cudaDeviceGetPCIBusId(bus_id, sizeof(bus_id), device) != cudaSuccess) return;
  if (by_bus(bus_id, &n->device) != 0) return;
  nvml_ = std::move(n);
}

GpuClockReader::~GpuClockReader() = default;

std::optional<GpuClocks> GpuClockReader::read() const {
  if (!nvml_) return std::nullopt;
  GpuClocks c;
  if (nvml_->clock_info(nvml_->device, 1, &c.sm_mhz) != 0 || nvml_->clock_info(nvml_->device, 2, &c.memory_mhz) != 0) {
    return std::nullopt;
  }
  return c;
}

}  // namespace quartet

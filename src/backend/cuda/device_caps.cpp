#include "backend/cuda/device_caps.h"

#include <cuda_runtime_api.h>

#include <map>
#include <mutex>

#include "backend/cuda/cuda_check.h"

namespace quartet::cuda {

bool device_has_wgmma() {
  static const bool has = [] {
    int device = 0, major = 0, minor = 0;
    QUARTET_CUDA_CHECK(cudaGetDevice(&device));
    QUARTET_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
    QUARTET_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
    return major == 9 && minor == 0;
  }();
  return has;
}

int multiprocessors() {
  static std::mutex mutex;
  static std::map<int, int> counts;  // per device: a process may drive devices of different sizes
  int device = 0;
  QUARTET_CUDA_CHECK(cudaGetDevice(&device));
  const std::lock_guard<std::mutex> lock(mutex);
  auto it = counts.find(device);
  if (it == counts.end()) {
    int sms = 0;
    QUARTET_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    it = counts.emplace(device, sms).first;
  }
  return it->second;
}

}  // namespace quartet::cuda

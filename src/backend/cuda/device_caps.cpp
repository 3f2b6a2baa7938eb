#include "backend/cuda/device_caps.h"

#include <cuda_runtime_api.h>

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

}  // namespace quartet::cuda

// The CUDA backend's entry points in a build without it (no nvcc or no GPU at configure time, or QUARTET_CUDA=OFF).
#include "quartet/backend/cuda.h"
#include "quartet/error.h"

namespace quartet {

bool cuda_built() { return false; }
bool cuda_available() { return false; }
int cuda_device_count() { return 0; }
std::string cuda_device_description() {
  return "this build has no CUDA backend (configured without nvcc, without a GPU, or with QUARTET_CUDA=OFF)";
}
std::unique_ptr<Backend> make_cuda_backend(const CudaBackendOptions&) {
  throw Error(
      "this build of quartet has no CUDA backend: rebuild on a machine with the CUDA toolkit (nvcc) and an "
      "NVIDIA GPU, or configure with -DQUARTET_CUDA=ON");
}

std::vector<CudaOpTime> cuda_op_profile(bool) { return {}; }
void cuda_activity_check() { throw Error("this build of quartet has no CUDA backend: there is no GPU activity to record"); }
void cuda_activity_start() { throw Error("this build of quartet has no CUDA backend: there is no GPU activity to record"); }
std::vector<DeviceActivity> cuda_activity_stop() {
  throw Error("this build of quartet has no CUDA backend: there is no GPU activity to record");
}

void cuda_select_device(int) { throw Error("this build of quartet has no CUDA backend: it cannot drive a GPU"); }
void* cuda_backend_stream(Backend&) { throw Error("this build of quartet has no CUDA backend"); }
void cuda_spin(double) { throw Error("this build of quartet has no CUDA backend: there is no GPU to keep busy"); }

}  // namespace quartet

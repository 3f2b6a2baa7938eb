// The CUDA backend's entry points in a build without a CUDA compiler.
#include "quartet/backend/cuda.h"
#include "quartet/error.h"

namespace quartet {

bool cuda_built() { return false; }
bool cuda_available() { return false; }
std::string cuda_device_description() { return "this build has no CUDA backend (no CUDA compiler was found)"; }
std::unique_ptr<Backend> make_cuda_backend(const CudaBackendOptions&) {
  throw Error("this build of quartet has no CUDA backend: rebuild on a machine with the CUDA toolkit (nvcc)");
}

std::vector<CudaOpTime> cuda_op_profile(bool) { return {}; }

}  // namespace quartet

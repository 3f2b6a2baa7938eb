// The device bridge of a build without CUDA: the CPU only.
#include <fmt/format.h>

#include "c_api/device_bridge.h"
#include "quartet/backend/cuda.h"
#include "quartet/error.h"

namespace quartet::c_api {

std::unique_ptr<Backend> make_device_backend(Device device, int index) {
  if (device == Device::cuda) return make_cuda_backend();  // throws: this build has no CUDA backend
  if (index != 0) throw Error(fmt::format("device_index: the CPU has one device, index 0, got {}", index));
  return make_cpu_backend();
}

void check_device_pointer(Device, int, const void*, const char*) {}

void run_on_stream(Device, int, void* stream, const std::function<void()>& work) {
  if (stream != nullptr) throw Error("stream: a CPU context takes no CUDA stream (pass NULL)");
  work();
}

}  // namespace quartet::c_api

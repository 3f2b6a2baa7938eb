// The device bridge of a build with CUDA. The CUDA backend queues its work on the legacy
// default stream; a caller's stream (PyTorch's current stream, often non-blocking) is joined
// to it with events both ways, so the backend needs no stream of its own.
#include <cuda_runtime_api.h>
#include <fmt/format.h>

#include "c_api/device_bridge.h"
#include "quartet/backend/cuda.h"
#include "quartet/error.h"

namespace quartet::c_api {

namespace {

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw Error(fmt::format("{}: {} ({})", what, cudaGetErrorString(e), cudaGetErrorName(e)));
}

// Makes `index` the current device for the scope and restores the caller's afterwards.
class CurrentDevice {
 public:
  explicit CurrentDevice(int index) {
    check(cudaGetDevice(&previous_), "cudaGetDevice");
    if (previous_ != index) check(cudaSetDevice(index), "cudaSetDevice");
  }
  ~CurrentDevice() { cudaSetDevice(previous_); }
  CurrentDevice(const CurrentDevice&) = delete;
  CurrentDevice& operator=(const CurrentDevice&) = delete;

 private:
  int previous_ = 0;
};

// `to` waits for everything queued on `from` so far.
void join(cudaStream_t from, cudaStream_t to) {
  cudaEvent_t event = nullptr;
  check(cudaEventCreateWithFlags(&event, cudaEventDisableTiming), "cudaEventCreateWithFlags");
  const cudaError_t recorded = cudaEventRecord(event, from);
  const cudaError_t waited = recorded == cudaSuccess ? cudaStreamWaitEvent(to, event, 0) : recorded;
  cudaEventDestroy(event);  // released once the wait no longer needs it
  check(waited, "joining the caller's CUDA stream");
}

}  // namespace

std::unique_ptr<Backend> make_device_backend(Device device, int index) {
  if (device == Device::cpu) {
    if (index != 0) throw Error(fmt::format("device_index: the CPU has one device, index 0, got {}", index));
    return make_cpu_backend();
  }
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    throw Error(fmt::format("device_index: no CUDA device: {}", cuda_device_description()));
  }
  if (index < 0 || index >= count) {
    throw Error(fmt::format("device_index: CUDA device {} does not exist; there are {} (0 to {})", index, count, count - 1));
  }
  CurrentDevice current(index);
  return make_cuda_backend();
}

void check_device_pointer(Device device, int index, const void* pointer, const char* what) {
  if (device != Device::cuda) return;
  cudaPointerAttributes attributes{};
  // Every call checks its pointers: the message is formatted only when one fails.
  if (const cudaError_t e = cudaPointerGetAttributes(&attributes, pointer); e != cudaSuccess) {
    check(e, fmt::format("cudaPointerGetAttributes({})", what).c_str());
  }
  if (attributes.type != cudaMemoryTypeDevice && attributes.type != cudaMemoryTypeManaged) {
    throw Error(fmt::format("{}: expected memory of CUDA device {}, got {} memory", what, index,
                            attributes.type == cudaMemoryTypeHost ? "pinned host" : "unregistered host"));
  }
  if (attributes.device != index) {
    throw Error(fmt::format("{}: expected memory of CUDA device {}, got memory of device {}", what, index,
                            attributes.device));
  }
}

void run_on_stream(Device device, int index, void* stream, const std::function<void()>& work) {
  if (device == Device::cpu) {
    if (stream != nullptr) throw Error("stream: a CPU context takes no CUDA stream (pass NULL)");
    work();
    return;
  }
  CurrentDevice current(index);
  const auto caller = static_cast<cudaStream_t>(stream);
  // The legacy default stream already waits for, and is waited on by, every blocking stream.
  if (caller == nullptr) {
    work();
    return;
  }
  join(caller, nullptr);
  try {
    work();
  } catch (...) {
    join(nullptr, caller);
    throw;
  }
  join(nullptr, caller);
}

}  // namespace quartet::c_api

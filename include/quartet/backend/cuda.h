// The CUDA backend: the same operations as the CPU backend, on an NVIDIA GPU. Available when
// the program was built with a CUDA compiler and a GPU is present.
#pragma once

#include <memory>
#include <cstdint>
#include <string>
#include <vector>

#include "quartet/backend/backend.h"
#include "quartet/backend/device_activity.h"

namespace quartet {

bool cuda_built();
// True if the program has the CUDA backend and a usable GPU (never throws).
bool cuda_available();
// "NVIDIA H100 80GB HBM3 (sm_90, 132 SMs)" or why there is none.
std::string cuda_device_description();
// How many GPUs this process may use (CUDA_VISIBLE_DEVICES counts); 0 without any or without the
// CUDA backend (never throws; creates no context).
int cuda_device_count();
struct CudaBackendOptions {
  // Where the NVFP4 GEMM is emulated (Hopper), the quantizers of quartet2's operands also write
  // the operand dequantized to BF16, so the GEMM that reads it next skips its dequantization
  // pass: rtn and four_over_six in their one pass over the data, MS-EDEN g16 in its scale pass.
  // Off only to measure the quantizers alone.
  bool fused_dequantize = true;
  // Attention through the reference kernels (one thread per query, quadratic memory) instead of
  // the fused flash-attention kernels: for tests that check the one against the other. The
  // environment variable QUARTET_REFERENCE_ATTENTION does the same.
  bool reference_attention = false;
};

// Throws Error if there is no usable GPU or the build has no CUDA backend.
std::unique_ptr<Backend> make_cuda_backend(const CudaBackendOptions& options = {});

// Makes GPU `index` this process's device (a rank of a multi-GPU run drives GPU LOCAL_RANK):
// before any other CUDA call of the process. Throws Error naming the GPUs there are.
void cuda_select_device(int index);
// The stream a CUDA backend queues its work on (a cudaStream_t), for a communicator that
// queues collectives behind it. Throws Error for another backend.
void* cuda_backend_stream(Backend& backend);

// Queues on the default stream a kernel that keeps the GPU busy for at least `ms` milliseconds
// (0 to 1000), for benchmarks that time the device's work alone: work queued behind it is all
// queued by the time the GPU reaches it. Throws Error outside that range.
void cuda_spin(double ms);

// Device time per backend operation, when the environment has QUARTET_PROFILE_OPS=1 (each
// operation's kernels are then bracketed by events; empty otherwise): the sums since the last
// call (reset) or since the start. Synchronises with the device.
struct CudaOpTime {
  std::string op;
  double ms = 0;       // device time between the events around the operation's kernels
  double host_ms = 0;  // host time spent in the operation's call (queueing its kernels)
  std::int64_t calls = 0;
};
std::vector<CudaOpTime> cuda_op_profile(bool reset = true);

// Every kernel, memset and copy the GPU runs between cuda_activity_start() and
// cuda_activity_stop(), timed by the device as the run goes (CUPTI's activity records: the
// run's own clocks and overlap, unlike a profiler that replays each kernel alone), in the order
// they started. CUPTI is loaded when first needed, from QUARTET_CUPTI, the library path or the
// CUDA toolkit; Error says where it looked when it is not there. One recording at a time;
// cuda_activity_stop() waits for the device.
void cuda_activity_start();
std::vector<DeviceActivity> cuda_activity_stop();
// Error, saying why, unless a recording could start here as far as CUPTI goes (it is found and
// of the version this program reads): for checking options before minutes of work.
void cuda_activity_check();

}  // namespace quartet

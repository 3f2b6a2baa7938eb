// Device time per backend operation, for finding what bounds a training step without an
// external profiler: with QUARTET_PROFILE_OPS=1 in the environment, each operation of the CUDA
// backend records an event before and after its kernels; cuda_op_profile() (quartet/backend/
// cuda.h) sums them per operation. Off (no events, no cost) otherwise.
#pragma once

#include <cuda_runtime_api.h>

#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "quartet/backend/cuda.h"

namespace quartet::cuda {

class OpProfiler {
 public:
  static OpProfiler& instance();
  bool enabled() const { return enabled_; }

  // Events around one operation's kernels on `stream`.
  class Scope {
   public:
    Scope(const char* op, cudaStream_t stream);
    ~Scope();
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    const char* op_;
    cudaStream_t stream_;
    cudaEvent_t start_ = nullptr;
    std::chrono::steady_clock::time_point host_start_;
  };

  // Waits for the device, then the summed milliseconds and calls per operation since the last
  // call (when reset).
  std::vector<CudaOpTime> take(bool reset);

 private:
  OpProfiler();
  cudaEvent_t event();
  void record(const char* op, cudaEvent_t start, cudaEvent_t stop, double host_ms);

  bool enabled_ = false;
  std::mutex mutex_;
  std::vector<cudaEvent_t> free_;
  struct Pending {
    const char* op;
    cudaEvent_t start, stop;
    double host_ms;
  };
  std::vector<Pending> pending_;
  std::map<std::string, CudaOpTime> totals_;
};

}  // namespace quartet::cuda

#define QUARTET_OP_SCOPE(name) ::quartet::cuda::OpProfiler::Scope quartet_op_scope_(name, stream_)

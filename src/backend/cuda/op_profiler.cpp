#include "backend/cuda/op_profiler.h"

#include <cstdlib>

#include "backend/cuda/cuda_check.h"

namespace quartet::cuda {

OpProfiler& OpProfiler::instance() {
  static OpProfiler profiler;
  return profiler;
}

OpProfiler::OpProfiler() {
  const char* v = std::getenv("QUARTET_PROFILE_OPS");
  enabled_ = v != nullptr && *v != '\0' && *v != '0';
}

cudaEvent_t OpProfiler::event() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!free_.empty()) {
    cudaEvent_t e = free_.back();
    free_.pop_back();
    return e;
  }
  cudaEvent_t e = nullptr;
  QUARTET_CUDA_CHECK(cudaEventCreate(&e));
  return e;
}

void OpProfiler::record(const char* op, cudaEvent_t start, cudaEvent_t stop, double host_ms) {
  std::lock_guard<std::mutex> lock(mutex_);
  pending_.push_back({op, start, stop, host_ms});
}

OpProfiler::Scope::Scope(const char* op, cudaStream_t stream) : op_(op), stream_(stream) {
  OpProfiler& p = instance();
  if (!p.enabled()) return;
  start_ = p.event();
  QUARTET_CUDA_CHECK(cudaEventRecord(start_, stream_));
  host_start_ = std::chrono::steady_clock::now();
}

OpProfiler::Scope::~Scope() {
  if (start_ == nullptr) return;
  OpProfiler& p = instance();
  // The host time excludes the event records, which exist only while profiling.
  const double host_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - host_start_).count();
  cudaEvent_t stop = p.event();
  if (cudaEventRecord(stop, stream_) == cudaSuccess) p.record(op_, start_, stop, host_ms);
}

std::vector<CudaOpTime> OpProfiler::take(bool reset) {
  QUARTET_CUDA_CHECK(cudaDeviceSynchronize());
  std::lock_guard<std::mutex> lock(mutex_);
  for (const Pending& e : pending_) {
    float ms = 0;
    QUARTET_CUDA_CHECK(cudaEventElapsedTime(&ms, e.start, e.stop));
    CudaOpTime& t = totals_[e.op];
    t.op = e.op;
    t.ms += ms;
    t.host_ms += e.host_ms;
    ++t.calls;
    free_.push_back(e.start);
    free_.push_back(e.stop);
  }
  pending_.clear();
  std::vector<CudaOpTime> out;
  for (const auto& [name, t] : totals_) out.push_back(t);
  if (reset) totals_.clear();
  return out;
}

}  // namespace quartet::cuda

#include "backend/cuda/queued_read.h"

#include <cstring>

#include "backend/cuda/cuda_check.h"
#include "quartet/error.h"
#include "quartet/numerics/bf16.h"

namespace quartet::cuda {

std::vector<double> values_from_bytes(const unsigned char* bytes, DType dtype, std::int64_t numel) {
  std::vector<double> out(static_cast<std::size_t>(numel));
  for (std::size_t i = 0; i < out.size(); ++i) {
    switch (dtype) {
      case DType::f32: out[i] = reinterpret_cast<const float*>(bytes)[i]; break;
      case DType::bf16: out[i] = bf16_to_float(reinterpret_cast<const std::uint16_t*>(bytes)[i]); break;
      case DType::i32: out[i] = reinterpret_cast<const std::int32_t*>(bytes)[i]; break;
      case DType::u8: out[i] = bytes[i]; break;
      case DType::f64: out[i] = reinterpret_cast<const double*>(bytes)[i]; break;
    }
  }
  return out;
}

namespace {

class PinnedQueuedRead final : public QueuedRead {
 public:
  PinnedQueuedRead(std::int64_t max_bytes, cudaStream_t stream) : max_bytes_(max_bytes), stream_(stream) {
    QUARTET_CUDA_CHECK(cudaMallocHost(&host_, static_cast<std::size_t>(max_bytes > 0 ? max_bytes : 1)));
    QUARTET_CUDA_CHECK(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming));
  }
  ~PinnedQueuedRead() override {
    cudaEventSynchronize(done_);  // the copy must not write into freed memory
    cudaEventDestroy(done_);
    cudaFreeHost(host_);
  }
  PinnedQueuedRead(const PinnedQueuedRead&) = delete;
  PinnedQueuedRead& operator=(const PinnedQueuedRead&) = delete;

  void queue(const Tensor& t) override {
    check_queued_read_size(t, max_bytes_);
    // The buffer may still be the target of the last queue()'s copy.
    QUARTET_CUDA_CHECK(cudaEventSynchronize(done_));
    QUARTET_CUDA_CHECK(cudaMemcpyAsync(host_, t.raw(), t.bytes(), cudaMemcpyDeviceToHost, stream_));
    QUARTET_CUDA_CHECK(cudaEventRecord(done_, stream_));
    dtype_ = t.dtype();
    numel_ = t.numel();
  }

  std::vector<double> wait() override {
    QUARTET_CUDA_CHECK(cudaEventSynchronize(done_));
    return values_from_bytes(static_cast<const unsigned char*>(host_), dtype_, numel_);
  }

 private:
  std::int64_t max_bytes_;
  cudaStream_t stream_;
  void* host_ = nullptr;
  cudaEvent_t done_ = nullptr;
  DType dtype_ = DType::f64;
  std::int64_t numel_ = 0;
};

class EventMark final : public DeviceMark {
 public:
  explicit EventMark(cudaStream_t stream) : stream_(stream) { QUARTET_CUDA_CHECK(cudaEventCreate(&event_)); }
  ~EventMark() override { cudaEventDestroy(event_); }
  EventMark(const EventMark&) = delete;
  EventMark& operator=(const EventMark&) = delete;

  void record() override {
    QUARTET_CUDA_CHECK(cudaEventRecord(event_, stream_));
    recorded_ = true;
  }

  double seconds_since(const DeviceMark& earlier) override {
    const auto* e = dynamic_cast<const EventMark*>(&earlier);
    if (e == nullptr) throw Error("DeviceMark: marks of two different backends compared");
    if (!recorded_ || !e->recorded_) throw Error("DeviceMark: a mark compared before it was recorded");
    QUARTET_CUDA_CHECK(cudaEventSynchronize(event_));
    float ms = 0;
    QUARTET_CUDA_CHECK(cudaEventElapsedTime(&ms, e->event_, event_));
    return static_cast<double>(ms) * 1e-3;
  }

 private:
  cudaStream_t stream_;
  cudaEvent_t event_ = nullptr;
  bool recorded_ = false;
};

}  // namespace

std::unique_ptr<DeviceMark> make_device_mark(cudaStream_t stream) { return std::make_unique<EventMark>(stream); }

std::unique_ptr<QueuedRead> make_queued_read(std::int64_t max_bytes, cudaStream_t stream) {
  return std::make_unique<PinnedQueuedRead>(max_bytes, stream);
}

}  // namespace quartet::cuda

// The Backend interface's own conveniences, written once over its virtual operations.
#include "quartet/backend/backend.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>

#include "quartet/error.h"

namespace quartet {

Tensor Backend::zeros(const Shape& shape, DType dtype) {
  Tensor t = empty(shape, dtype);
  fill(t, 0.0);
  return t;
}

void check_parameter_segments(const std::vector<ParameterSegment>& segments, std::int64_t elements) {
  for (const ParameterSegment& s : segments) {
    if (s.offset < 0 || s.count < 0 || s.offset > elements || s.count > elements - s.offset) {
      throw Error(fmt::format("adamw: segment [{}, +{}) is outside the {} parameters", s.offset, s.count, elements));
    }
  }
  std::vector<ParameterSegment> sorted = segments;
  std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.offset < b.offset; });
  for (std::size_t i = 1; i < sorted.size(); ++i) {
    const ParameterSegment &a = sorted[i - 1], &b = sorted[i];
    if (a.count > 0 && b.count > 0 && b.offset < a.offset + a.count) {
      throw Error(fmt::format("adamw: segments [{}, +{}) and [{}, +{}) overlap", a.offset, a.count, b.offset, b.count));
    }
  }
}

namespace {

// A synchronous backend's values are final when queue() is called.
class ImmediateRead final : public QueuedRead {
 public:
  ImmediateRead(Backend& backend, std::int64_t max_bytes) : backend_(backend), max_bytes_(max_bytes) {}
  void queue(const Tensor& t) override {
    check_queued_read_size(t, max_bytes_);
    values_ = backend_.download(t);
  }
  std::vector<double> wait() override { return values_; }

 private:
  Backend& backend_;
  std::int64_t max_bytes_;
  std::vector<double> values_;
};

// The device is the host: what was queued before record() has run when it is called.
class HostClockMark final : public DeviceMark {
 public:
  void record() override {
    at_ = std::chrono::steady_clock::now();
    recorded_ = true;
  }
  double seconds_since(const DeviceMark& earlier) override {
    const auto* e = dynamic_cast<const HostClockMark*>(&earlier);
    if (e == nullptr) throw Error("DeviceMark: marks of two different backends compared");
    if (!recorded_ || !e->recorded_) throw Error("DeviceMark: a mark compared before it was recorded");
    return std::chrono::duration<double>(at_ - e->at_).count();
  }

 private:
  std::chrono::steady_clock::time_point at_{};
  bool recorded_ = false;
};

}  // namespace

void check_queued_read_size(const Tensor& t, std::int64_t max_bytes) {
  if (t.bytes() > static_cast<std::size_t>(max_bytes)) {
    throw Error(fmt::format("queued read: a tensor of {} bytes in a reader made for {}", t.bytes(), max_bytes));
  }
}

std::unique_ptr<QueuedRead> Backend::make_queued_read(std::int64_t max_bytes) {
  return std::make_unique<ImmediateRead>(*this, max_bytes);
}

std::unique_ptr<DeviceMark> Backend::make_device_mark() { return std::make_unique<HostClockMark>(); }

std::pair<QTensor, QTensor> Backend::quantize_both_ways(const Tensor& x, const QuantizerSpec& row_spec,
                                                        const Rotation& row_rotation, const RandomContext& row_random,
                                                        const QuantizerSpec& col_spec, const Rotation& col_rotation,
                                                        const RandomContext& col_random) {
  QTensor rows = quantize(x, /*transpose=*/false, row_spec, row_rotation, row_random);
  QTensor cols = quantize(x, /*transpose=*/true, col_spec, col_rotation, col_random);
  return {std::move(rows), std::move(cols)};
}

double Backend::cross_entropy_loss(Tensor& dlogits, const Tensor& logits, const Tensor& targets, double grad_scale) {
  Tensor sum = zeros({1}, DType::f64);
  cross_entropy(dlogits, logits, targets, logits.ndim() == 2 ? logits.dim(1) : 0, grad_scale, sum);
  raise_pending_errors();
  return download(sum)[0];
}

}  // namespace quartet

#include "quartet/train/batch_prefetcher.h"

#include <utility>

namespace quartet {

BatchPrefetcher::BatchPrefetcher(BatchLoader loader, std::int64_t depth)
    : loader_(std::move(loader)), depth_(static_cast<std::size_t>(depth < 1 ? 1 : depth)) {
  thread_ = std::thread([this] { produce(); });
}

BatchPrefetcher::~BatchPrefetcher() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  changed_.notify_all();
  thread_.join();
}

void BatchPrefetcher::produce() {
  for (;;) {
    Batch b;
    try {
      loader_.next(b.inputs, b.targets);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      error_ = std::current_exception();
      changed_.notify_all();
      return;
    }
    b.position_after = loader_.position();
    b.epoch_after = loader_.epoch();
    std::unique_lock<std::mutex> lock(mutex_);
    changed_.wait(lock, [&] { return stop_ || ready_.size() < depth_; });
    if (stop_) return;
    ready_.push_back(std::move(b));
    changed_.notify_all();
  }
}

Batch BatchPrefetcher::next() {
  std::unique_lock<std::mutex> lock(mutex_);
  changed_.wait(lock, [&] { return !ready_.empty() || error_ != nullptr; });
  if (ready_.empty()) std::rethrow_exception(error_);
  Batch b = std::move(ready_.front());
  ready_.pop_front();
  changed_.notify_all();
  return b;
}

}  // namespace quartet

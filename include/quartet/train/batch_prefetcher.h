// Training batches prepared ahead by a host thread, so that the step loop only hands them to the
// backend (whose upload is asynchronous on a GPU).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "quartet/data/dataset.h"

namespace quartet {

struct Batch {
  std::vector<std::int32_t> inputs, targets;
  // The loader's state after this batch: where a checkpoint taken after consuming it resumes.
  std::int64_t position_after = 0;
  std::int64_t epoch_after = 0;
};

class BatchPrefetcher {
 public:
  // Takes the loader (positioned where the run starts) and keeps up to `depth` batches ready.
  BatchPrefetcher(BatchLoader loader, std::int64_t depth = 4);
  ~BatchPrefetcher();
  BatchPrefetcher(const BatchPrefetcher&) = delete;
  BatchPrefetcher& operator=(const BatchPrefetcher&) = delete;

  // The next batch in order (waits if the thread has not made it yet; rethrows its error).
  Batch next();

 private:
  void produce();

  BatchLoader loader_;
  const std::size_t depth_;
  std::deque<Batch> ready_;
  std::mutex mutex_;
  std::condition_variable changed_;
  bool stop_ = false;
  std::exception_ptr error_;
  std::thread thread_;
};

}  // namespace quartet

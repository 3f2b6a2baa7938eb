#include "quartet/util/parallel_for.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace quartet {

void parallel_for(std::size_t n, int threads, const std::function<void(std::size_t, int)>& body,
                  const std::function<void(std::size_t)>& progress) {
  std::atomic<std::size_t> next{0}, done{0};
  std::atomic<bool> failed{false};
  std::mutex mutex;
  std::condition_variable finished;
  std::size_t error_index = n;
  std::exception_ptr error;
  int running = 0;
  const auto work = [&](int worker) {
    for (std::size_t i; !failed.load(std::memory_order_relaxed) && (i = next.fetch_add(1)) < n;) {
      try {
        body(i, worker);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex);
        if (i < error_index) {
          error_index = i;
          error = std::current_exception();
        }
        failed = true;
      }
      done.fetch_add(1);
    }
    std::lock_guard<std::mutex> lock(mutex);
    if (--running == 0) finished.notify_all();
  };
  const int count = threads < 1 ? 1 : threads;
  std::vector<std::thread> pool;
  running = count;
  for (int t = 1; t < count; ++t) pool.emplace_back(work, t);
  if (count == 1 || !progress) {
    work(0);
  } else {
    // The calling thread reports progress while the pool works, then joins the work itself.
    std::thread last(work, 0);
    std::unique_lock<std::mutex> lock(mutex);
    while (!finished.wait_for(lock, std::chrono::milliseconds(200), [&] { return running == 0; })) {
      lock.unlock();
      progress(done.load());
      lock.lock();
    }
    lock.unlock();
    last.join();
  }
  for (std::thread& t : pool) t.join();
  if (progress) progress(done.load());
  if (error) std::rethrow_exception(error);
}

int default_thread_count() {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

}  // namespace quartet

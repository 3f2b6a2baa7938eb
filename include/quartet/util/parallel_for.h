// A plain work-sharing loop over threads, for host work made of many independent items (reading
// and tokenizing the files of a corpus).
#pragma once

#include <cstddef>
#include <functional>

namespace quartet {

// Calls body(i, worker) for i in [0, n) on `threads` threads (at least 1; 1 runs inline), items
// handed out in order from a shared counter; `worker` in [0, threads) names the thread, for
// state each thread keeps to itself (a tokenizer and its cache). `progress(done)`, if given, is
// called on the calling thread about five times a second while several threads work, and once at
// the end. If bodies throw, the remaining items are
// abandoned and the exception of the lowest item index that threw is rethrown, so the error a
// user sees does not depend on the thread count or timing.
void parallel_for(std::size_t n, int threads, const std::function<void(std::size_t item, int worker)>& body,
                  const std::function<void(std::size_t done)>& progress = {});

// The number of threads to use when the user did not say: the hardware's, at least 1.
int default_thread_count();

}  // namespace quartet

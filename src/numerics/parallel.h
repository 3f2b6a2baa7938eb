// OpenMP is worth its fork/join only for large loops; small tensors (tests, tiny models) run
// on one thread. Results never depend on the thread count: every parallel loop writes
// disjoint outputs, and reductions are maxima or are finished serially.
#pragma once

#include <cstdint>

namespace quartet {

inline constexpr std::int64_t kParallelMinElements = std::int64_t{1} << 16;

inline bool worth_parallel(std::int64_t elements) { return elements >= kParallelMinElements; }

}  // namespace quartet

// OpenMP is worth its fork/join only for large loops; small tensors (tests, tiny models) run
// on one thread. Results never depend on the thread count: every parallel loop writes
// disjoint outputs, reductions are maxima or are finished serially in a fixed order, and matrix
// products go through fixed_order_gemm (numerics/fixed_order_blas.h), whose blocks are fixed
// rather than chosen per thread count as OpenBLAS's own threading does. A new reduction must
// keep this: sum per fixed chunk, then combine the chunks in order (tested by
// tests/cli/test_options_cli.py, ThreadCountDeterminism).
#pragma once

#include <cstdint>

namespace quartet {

inline constexpr std::int64_t kParallelMinElements = std::int64_t{1} << 16;

inline bool worth_parallel(std::int64_t elements) { return elements >= kParallelMinElements; }

}  // namespace quartet

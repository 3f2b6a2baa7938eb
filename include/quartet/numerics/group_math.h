// Reductions over a quantization group in the one order every backend uses.
//
// tree_sum<N> adds neighbours pairwise, then pairs of pairs, and so on:
//   N = 4: (v0 + v1) + (v2 + v3);  N = 8: ((v0+v1)+(v2+v3)) + ((v4+v5)+(v6+v7)); ...
// This is the order a butterfly (xor-shuffle) reduction over lanes holding consecutive
// elements produces, and the order a single thread holding the whole group can use, so both
// GPU layouts can reproduce it. Maxima are order-independent.
#pragma once

#include "quartet/numerics/host_device.h"

namespace quartet {

template <int N>
QUARTET_HD float tree_sum(const float* v) {
  static_assert(N >= 1 && (N & (N - 1)) == 0, "tree_sum needs a power-of-two length");
  if constexpr (N == 1) {
    return v[0];
  } else {
    return fadd(tree_sum<N / 2>(v), tree_sum<N / 2>(v + N / 2));
  }
}

// max |v_i|, as a chain from 0 (the maximum is the same number in any order). On the device each
// step is one FMNMX with the |.| operand modifier. A pairwise tree (commit c71c6c1, a chain 4
// deep instead of 16) measured about 22 more executed instructions per group in the MS-EDEN
// row-wise kernel and no gain in the tile kernels (docs/results/ncu-739a39b-h200.txt), so the
// chain stays.
template <int N>
QUARTET_HD float group_absmax(const float* v) {
  float m = 0.0f;
  for (int i = 0; i < N; ++i) m = fmax_nonneg(m, fabs_bits(v[i]));
  return m;
}

}  // namespace quartet

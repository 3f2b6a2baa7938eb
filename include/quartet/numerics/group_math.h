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

// max |v_i| as a pairwise tree: the maximum is the same number whichever order finds it, and
// the tree's dependency chain is log2 N deep instead of N (on the device the leaves are one
// FMNMX with two |.| modifiers, each inner node one FMNMX).
template <int N>
QUARTET_HD float group_absmax(const float* v) {
  static_assert(N >= 1 && (N & (N - 1)) == 0, "group_absmax needs a power-of-two length");
  if constexpr (N == 1) {
    return fabs_bits(v[0]);
  } else {
    return fmax_nonneg(group_absmax<N / 2>(v), group_absmax<N / 2>(v + N / 2));
  }
}

}  // namespace quartet

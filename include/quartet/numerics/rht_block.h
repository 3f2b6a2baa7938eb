// One block of the randomized Hadamard transform, shared verbatim by the CPU reference and the
// CUDA kernels: computed in double (exact sign flips, the butterflies of the unnormalised
// Walsh-Hadamard transform in canonical Sylvester order, one multiplication by 1/sqrt(n)) and
// rounded once to FP32. The same double operations in the same order give the same floats on
// both sides.
#pragma once

#include "quartet/numerics/host_device.h"

namespace quartet {

inline constexpr int kMaxRhtBlock = 128;

// In-place unnormalised transform: v <- H v with H[i][j] = (-1)^popcount(i & j).
QUARTET_HD void fwht_inplace(double* v, int n) {
  for (int h = 1; h < n; h *= 2) {
    for (int base = 0; base < n; base += 2 * h) {
      for (int j = base; j < base + h; ++j) {
        const double a = v[j], b = v[j + h];
        v[j] = a + b;
        v[j + h] = a - b;
      }
    }
  }
}

// y = H_n D x / sqrt(n) with D = diag(signs): the signs before mixing. norm = 1/sqrt(n) in double.
QUARTET_HD void rht_forward_block(const float* x, const float* signs, int n, double norm, float* y) {
  double b[kMaxRhtBlock];
  for (int j = 0; j < n; ++j) b[j] = static_cast<double>(x[j]) * signs[j];
  fwht_inplace(b, n);
  for (int j = 0; j < n; ++j) y[j] = static_cast<float>(b[j] * norm);
}

// x = D H_n y / sqrt(n), the inverse (H is symmetric and orthonormal).
QUARTET_HD void rht_inverse_block(const float* y, const float* signs, int n, double norm, float* x) {
  double b[kMaxRhtBlock];
  for (int j = 0; j < n; ++j) b[j] = y[j];
  fwht_inplace(b, n);
  for (int j = 0; j < n; ++j) x[j] = static_cast<float>(b[j] * norm * signs[j]);
}

}  // namespace quartet

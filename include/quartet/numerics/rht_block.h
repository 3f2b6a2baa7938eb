// One block of the randomized Hadamard transform, shared verbatim by the CPU reference and the
// CUDA kernels, in FP32 (numerics.md §4: "Compute in FP32"): exact sign flips, the butterflies
// of the unnormalised Walsh-Hadamard transform in canonical Sylvester order (stage h = 1, 2,
// 4, ...; pair (j, j + h) becomes (a + b, a - b)), then one multiplication by fl(1/sqrt(n)).
// Every step is one correctly rounded FP32 operation, so any layout that performs the same
// butterflies (a GPU thread for the stages inside its 16 elements, lane shuffles for the
// others) gets the same floats. Error: at most (log2 n + 1.5) u ||x|| per element, inside
// the (log2 n + 2) u ||x|| the tests allow.
#pragma once

#include "quartet/numerics/host_device.h"

namespace quartet {

inline constexpr int kMaxRhtBlock = 128;

// fl(1/sqrt(n)) for the rotation sizes (16, 32, 128), the same constant on host and device.
QUARTET_HD float rht_norm(int n) {
  return n == 16 ? 0.25f : (n == 32 ? 0x1.6a09e6p-3f : (n == 128 ? 0x1.6a09e6p-4f : 1.0f));
}

// In-place unnormalised transform in double: v <- H v with H[i][j] = (-1)^popcount(i & j)
// (the public fwht(), exact for integer inputs).
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

// The same butterflies in FP32, the order the quantizers' rotation uses.
QUARTET_HD void fwht_inplace_f32(float* v, int n) {
  for (int h = 1; h < n; h *= 2) {
    for (int base = 0; base < n; base += 2 * h) {
      for (int j = base; j < base + h; ++j) {
        const float a = v[j], b = v[j + h];
        v[j] = fadd(a, b);
        v[j + h] = fsub(a, b);
      }
    }
  }
}

// y = H_n D x / sqrt(n) with D = diag(signs): the signs before mixing. y may alias x.
QUARTET_HD void rht_forward_block(const float* x, const float* signs, int n, float* y) {
  float b[kMaxRhtBlock];
  for (int j = 0; j < n; ++j) b[j] = fmul(x[j], signs[j]);
  fwht_inplace_f32(b, n);
  const float norm = rht_norm(n);
  for (int j = 0; j < n; ++j) y[j] = fmul(b[j], norm);
}

// x = D H_n y / sqrt(n), the inverse (H is symmetric and orthonormal). x may alias y.
QUARTET_HD void rht_inverse_block(const float* y, const float* signs, int n, float* x) {
  float b[kMaxRhtBlock];
  for (int j = 0; j < n; ++j) b[j] = y[j];
  fwht_inplace_f32(b, n);
  const float norm = rht_norm(n);
  for (int j = 0; j < n; ++j) x[j] = fmul(fmul(b[j], norm), signs[j]);
}

}  // namespace quartet

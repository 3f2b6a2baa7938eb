// Randomized Hadamard transform (numerics.md §4).
//
// H_n is the Sylvester Hadamard matrix in canonical order, H_n[i][j] = (-1)^popcount(i & j),
// scaled by 1/sqrt(n). The RHT of an n-block x is y = H_n D x with D = diag(signs): the signs
// are applied BEFORE mixing. Along a row, consecutive n-blocks are transformed independently
// with the same H_n D. The CPU computes each block in double and rounds once to FP32.
#pragma once

#include <array>
#include <cstdint>

#include "quartet/numerics/philox.h"

namespace quartet {

inline constexpr int kMaxRotationSize = 128;

// 16, 32 and 128 are the rotation sizes of the recipes; 0 means no rotation.
bool is_supported_rotation_size(int n);

// In-place unnormalised Walsh-Hadamard transform in Sylvester order (n a power of two).
void fwht(double* v, int n);

struct Rotation {
  int size = 0;                                  // 0 (none), 16, 32 or 128
  std::array<float, kMaxRotationSize> signs{};  // +1/-1; the first `size` entries are used

  bool enabled() const { return size != 0; }

  static Rotation none();
  // H_n with all signs +1: the fixed Hadamard of QuEST/Quartet I.
  static Rotation hadamard(int n);
  // H_n D with D drawn from Philox (row kRotationSignRow, see philox.h).
  static Rotation random(int n, const RandomContext& ctx);

  friend bool operator==(const Rotation&, const Rotation&) = default;
};

// data (rows x cols, leading dimension ld) <- H D data, blockwise along each row. cols must
// be a multiple of rotation.size. A disabled rotation leaves data unchanged.
void rotate_rows(float* data, std::int64_t rows, std::int64_t cols, std::int64_t ld, const Rotation& rotation);

// The inverse, data <- D H data (H_n is symmetric and orthonormal).
void unrotate_rows(float* data, std::int64_t rows, std::int64_t cols, std::int64_t ld, const Rotation& rotation);

}  // namespace quartet

#include "quartet/numerics/hadamard.h"

#include <cmath>
#include <fmt/format.h>

#include "quartet/error.h"
#include "numerics/parallel.h"

namespace quartet {

bool is_supported_rotation_size(int n) { return n == 0 || n == 16 || n == 32 || n == 128; }

void fwht(double* v, int n) {
  // Butterflies with stride 1, 2, 4, ...: the result is H_n v with H_n[i][j] =
  // (-1)^popcount(i & j), i.e. canonical Sylvester order.
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

Rotation Rotation::none() { return Rotation{}; }

Rotation Rotation::hadamard(int n) {
  if (n == 0 || !is_supported_rotation_size(n)) {
    throw Error(fmt::format("Hadamard rotation size must be 16, 32 or 128, got {}", n));
  }
  Rotation r;
  r.size = n;
  for (int j = 0; j < n; ++j) r.signs[j] = 1.0f;
  return r;
}

Rotation Rotation::random(int n, const RandomContext& ctx) {
  Rotation r = hadamard(n);
  const PhiloxWords words = philox_block(ctx, kRotationSignRow, 0);
  for (int j = 0; j < n; ++j) {
    r.signs[j] = ((words[j / 32] >> (j % 32)) & 1u) ? -1.0f : 1.0f;
  }
  return r;
}

namespace {

void check_rotation_shape(std::int64_t cols, std::int64_t ld, const Rotation& rotation) {
  if (!is_supported_rotation_size(rotation.size)) {
    throw Error(fmt::format("rotation size must be 0, 16, 32 or 128, got {}", rotation.size));
  }
  if (rotation.size != 0 && cols % rotation.size != 0) {
    throw Error(fmt::format("a Hadamard rotation of size {} needs the reduction dimension to be a "
                            "multiple of {}, got {} columns",
                            rotation.size, rotation.size, cols));
  }
  if (ld < cols) throw Error(fmt::format("leading dimension {} is smaller than {} columns", ld, cols));
}

// Transforms each n-block of each row in double and rounds once; `signs_first` selects the
// forward transform H D x, otherwise the inverse D H y.
void transform_rows(float* data, std::int64_t rows, std::int64_t cols, std::int64_t ld,
                    const Rotation& rotation, bool signs_first) {
  check_rotation_shape(cols, ld, rotation);
  const int n = rotation.size;
  if (n == 0) return;
  const double norm = 1.0 / std::sqrt(static_cast<double>(n));
#pragma omp parallel for schedule(static) if (worth_parallel(rows * cols))
  for (std::int64_t r = 0; r < rows; ++r) {
    double block[kMaxRotationSize];
    float* row = data + r * ld;
    for (std::int64_t c0 = 0; c0 < cols; c0 += n) {
      for (int j = 0; j < n; ++j) {
        block[j] = signs_first ? static_cast<double>(row[c0 + j]) * rotation.signs[j] : row[c0 + j];
      }
      fwht(block, n);
      for (int j = 0; j < n; ++j) {
        const double y = block[j] * norm;
        row[c0 + j] = static_cast<float>(signs_first ? y : y * rotation.signs[j]);
      }
    }
  }
}

}  // namespace

void rotate_rows(float* data, std::int64_t rows, std::int64_t cols, std::int64_t ld, const Rotation& rotation) {
  transform_rows(data, rows, cols, ld, rotation, true);
}

void unrotate_rows(float* data, std::int64_t rows, std::int64_t cols, std::int64_t ld, const Rotation& rotation) {
  transform_rows(data, rows, cols, ld, rotation, false);
}

}  // namespace quartet

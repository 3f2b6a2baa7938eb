#include "quartet/numerics/hadamard.h"

#include <cmath>
#include <fmt/format.h>

#include "quartet/error.h"
#include "quartet/numerics/rht_block.h"
#include "numerics/parallel.h"

namespace quartet {

bool is_supported_rotation_size(int n) { return n == 0 || n == 16 || n == 32 || n == 128; }

void fwht(double* v, int n) { fwht_inplace(v, n); }

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

// Transforms each n-block of each row (rht_block.h: FP32 butterflies); `forward` selects
// H D x, otherwise the inverse D H y.
void transform_rows(float* data, std::int64_t rows, std::int64_t cols, std::int64_t ld, const Rotation& rotation,
                    bool forward) {
  check_rotation_shape(cols, ld, rotation);
  const int n = rotation.size;
  if (n == 0) return;
#pragma omp parallel for schedule(static) if (worth_parallel(rows * cols))
  for (std::int64_t r = 0; r < rows; ++r) {
    float* row = data + r * ld;
    for (std::int64_t c0 = 0; c0 < cols; c0 += n) {
      if (forward) {
        rht_forward_block(row + c0, rotation.signs.data(), n, row + c0);
      } else {
        rht_inverse_block(row + c0, rotation.signs.data(), n, row + c0);
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

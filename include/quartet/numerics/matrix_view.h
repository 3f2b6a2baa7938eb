#pragma once

#include <cstdint>

namespace quartet {

// A read-only row-major matrix: element (r, c) is data[r * ld + c]. Columns are the GEMM
// reduction dimension and are contiguous.
struct ConstMatrixView {
  const float* data = nullptr;
  std::int64_t rows = 0;
  std::int64_t cols = 0;
  std::int64_t ld = 0;

  ConstMatrixView() = default;
  ConstMatrixView(const float* d, std::int64_t r, std::int64_t c) : data(d), rows(r), cols(c), ld(c) {}
  ConstMatrixView(const float* d, std::int64_t r, std::int64_t c, std::int64_t stride)
      : data(d), rows(r), cols(c), ld(stride) {}
  const float& operator()(std::int64_t r, std::int64_t c) const { return data[r * ld + c]; }
};

}  // namespace quartet

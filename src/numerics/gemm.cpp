#include "quartet/numerics/gemm.h"

#include <fmt/format.h>

#include "numerics/fixed_order_blas.h"
#include "quartet/error.h"

namespace quartet {

void gemm_quantized(const QuantizedTensor& a, const QuantizedTensor& b, float* out) {
  a.validate();
  b.validate();
  if (a.format != b.format) {
    throw Error(fmt::format("gemm: operand formats differ (A is {}, B is {})", format_name(a.format),
                            format_name(b.format)));
  }
  if (a.cols != b.cols) {
    throw Error(fmt::format("gemm: reduction dimensions differ (A is {} x {}, B is {} x {}; both are K-contiguous)",
                            a.rows, a.cols, b.rows, b.cols));
  }
  if (a.rotation_size != b.rotation_size) {
    throw Error(fmt::format("gemm: operands were rotated differently (RHT size {} vs {}); the rotation only "
                            "cancels when both use the same one",
                            a.rotation_size, b.rotation_size));
  }
  if (out == nullptr) throw Error("gemm: the output pointer is null");
  // Zero-padded columns contribute exact zeros, so the padded length is used as K.
  const std::vector<float> da = dequantize_block_scaled(a);
  const std::vector<float> db = dequantize_block_scaled(b);
  constexpr std::int64_t kMaxBlasDim = 2147483647;  // CBLAS takes int dimensions
  if (a.rows > kMaxBlasDim || b.rows > kMaxBlasDim || a.padded_cols() > kMaxBlasDim) {
    throw Error(fmt::format("gemm: {} x {} x {} exceeds the CBLAS index range", a.rows, b.rows, a.cols));
  }
  const auto m = static_cast<int>(a.rows), n = static_cast<int>(b.rows), k = static_cast<int>(a.padded_cols());
  const float alpha = a.tensor_scale * b.tensor_scale;
  fixed_order_gemm(false, true, m, n, k, alpha, da.data(), k, db.data(), k, 0.0f, out, n);  // any thread count: same bits
}

std::vector<float> gemm_quantized(const QuantizedTensor& a, const QuantizedTensor& b) {
  std::vector<float> out(static_cast<std::size_t>(a.rows * b.rows));
  gemm_quantized(a, b, out.data());
  return out;
}

}  // namespace quartet

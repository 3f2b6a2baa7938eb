// Tensor maps (TMA descriptors, sm_90 and later) for 2-D row-major tensors, made through the
// driver's cuTensorMapEncodeTiled, found at run time (no link to the driver library).
#pragma once

#include <cuda.h>

#include <cstdint>

namespace quartet::cuda {

// A map of `rows` x `row_elements` elements of `type` at `base`, rows `row_bytes` apart (a
// multiple of 16), copied in boxes of `box_rows` x `box_elements` with `swizzle`; reads past
// the edges fill zeros. Throws Error naming the driver's complaint.
CUtensorMap tensor_map_2d(const void* base, CUtensorMapDataType type, std::uint64_t row_elements, std::uint64_t rows,
                          std::uint64_t row_bytes, std::uint32_t box_elements, std::uint32_t box_rows,
                          CUtensorMapSwizzle swizzle);

}  // namespace quartet::cuda

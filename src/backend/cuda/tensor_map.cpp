#include "backend/cuda/tensor_map.h"

#include <cuda_runtime_api.h>
#include <cudaTypedefs.h>

#include <fmt/format.h>

#include "backend/cuda/cuda_check.h"
#include "quartet/error.h"

namespace quartet::cuda {
namespace {

PFN_cuTensorMapEncodeTiled_v12000 encode_function() {
  static const PFN_cuTensorMapEncodeTiled_v12000 function = [] {
    void* found = nullptr;
    cudaDriverEntryPointQueryResult status{};
    QUARTET_CUDA_CHECK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &found, 12000, cudaEnableDefault, &status));
    if (status != cudaDriverEntryPointSuccess || found == nullptr) {
      throw Error("tensor map: the CUDA driver has no cuTensorMapEncodeTiled (a driver for CUDA 12.0 or later is needed)");
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(found);
  }();
  return function;
}

}  // namespace

CUtensorMap tensor_map_2d(const void* base, CUtensorMapDataType type, std::uint64_t row_elements, std::uint64_t rows,
                          std::uint64_t row_bytes, std::uint32_t box_elements, std::uint32_t box_rows,
                          CUtensorMapSwizzle swizzle) {
  CUtensorMap map{};
  const cuuint64_t dims[2] = {row_elements, rows};
  const cuuint64_t strides[1] = {row_bytes};
  const cuuint32_t box[2] = {box_elements, box_rows};
  const cuuint32_t element_strides[2] = {1, 1};
  const CUresult result = encode_function()(&map, type, 2, const_cast<void*>(base), dims, strides, box, element_strides,
                                            CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                                            CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (result != CUDA_SUCCESS) {
    throw Error(fmt::format("tensor map: cuTensorMapEncodeTiled failed with CUresult {} for {} x {} elements, rows {} bytes "
                            "apart, boxes of {} x {}",
                            static_cast<int>(result), rows, row_elements, row_bytes, box_rows, box_elements));
  }
  return map;
}

}  // namespace quartet::cuda

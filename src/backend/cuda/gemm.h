// GEMMs on the GPU through cuBLASLt, in the "TN" sense of numerics.md §7:
// out[m][n] (+)= alpha sum_k A[m][k] B[n][k], BF16 operands, FP32 accumulation, FP32 or BF16
// output. Row-major tensors are handed to the column-major library as their transposes, so no
// data moves. The heuristic's first algorithm is cached per shape, so repeated GEMMs of one
// shape always run the same kernel (deterministic results).
#pragma once

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <tuple>

#include "quartet/backend/tensor.h"

namespace quartet::cuda {

class Gemm {
 public:
  Gemm();
  ~Gemm();
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;

  // a: bf16 [m, k] (or [k, m] when a_transposed); b: bf16 [n, k] (or [k, n]); out: [m, n] of
  // out_dtype (f32 or bf16). alpha and beta are device pointers to one float each.
  void run(void* out, DType out_dtype, const void* a, bool a_transposed, const void* b, bool b_transposed,
           std::int64_t m, std::int64_t n, std::int64_t k, const float* alpha, const float* beta, cudaStream_t stream);

  // Native block-scaled NVFP4 (Blackwell): out[m][n] (+)= alpha sum_k A[m][k] B[n][k] with
  // a, b packed E2M1 codes [m or n][k/2] and their E4M3 scales in the 128x4-tiled layout
  // (k a multiple of 32; cuBLASLt needs TN, which this is). Returns false, doing nothing, when
  // cuBLASLt has no algorithm for the shape (NOT_SUPPORTED, e.g. unaligned dimensions).
  bool run_nvfp4(void* out, DType out_dtype, const void* a, const void* a_scales, const void* b, const void* b_scales,
                 std::int64_t m, std::int64_t n, std::int64_t k, const float* alpha, const float* beta, cudaStream_t stream);

  // Whether cuBLASLt runs a block-scaled NVFP4 GEMM (CUDA_R_4F_E2M1, VEC16_UE4M3 scales) on
  // this GPU: it answers NOT_SUPPORTED on Hopper. Probed once.
  bool native_nvfp4();
  std::string native_nvfp4_status() const { return native_status_; }

 private:
  using Key = std::tuple<std::int64_t, std::int64_t, std::int64_t, bool, bool, int>;
  struct Descriptors;
  struct Plan;
  Plan& bf16_plan(std::int64_t m, std::int64_t n, std::int64_t k, bool at, bool bt, DType out_dtype);
  const cublasLtMatmulAlgo_t* cached_algo(std::map<Key, std::optional<cublasLtMatmulAlgo_t>>& cache, const Key& key,
                                          Descriptors& d, cublasStatus_t* status);
  cublasLtHandle_t handle_ = nullptr;
  std::shared_ptr<void> workspace_;
  std::size_t workspace_bytes_ = 32u << 20;
  std::map<Key, std::optional<cublasLtMatmulAlgo_t>> algos_;
  std::map<Key, std::optional<cublasLtMatmulAlgo_t>> fp4_algos_;
  std::map<Key, std::unique_ptr<Plan>> plans_;
  int native_ = -1;  // -1 not probed, 0 no, 1 yes
  std::string native_status_ = "not probed";
};

}  // namespace quartet::cuda

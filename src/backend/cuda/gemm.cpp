#include "backend/cuda/gemm.h"

#include <fmt/format.h>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device_memory.h"
#include "quartet/error.h"

namespace quartet::cuda {

// RAII for the cuBLASLt descriptors of one call.
struct Gemm::Descriptors {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  ~Descriptors() {
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

namespace {

cudaDataType_t cuda_type(DType d) {
  switch (d) {
    case DType::f32: return CUDA_R_32F;
    case DType::bf16: return CUDA_R_16BF;
    default: throw Error(fmt::format("GEMM output must be f32 or bf16, got {}", dtype_name(d)));
  }
}

}  // namespace

// The heuristic's first algorithm for the problem in `d`, looked up once per shape and kept, so
// repeated GEMMs of one shape run the same kernel. Null when cuBLASLt has none: it answers
// such shapes with NOT_SUPPORTED (low-precision types need aligned dimensions) or with no
// result; that answer is kept too, and `status` receives it.
const cublasLtMatmulAlgo_t* Gemm::cached_algo(std::map<Key, std::optional<cublasLtMatmulAlgo_t>>& cache, const Key& key,
                                              Descriptors& d, cublasStatus_t* status) {
  auto it = cache.find(key);
  if (it == cache.end()) {
    QUARTET_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&d.pref));
    QUARTET_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(d.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                              &workspace_bytes_, sizeof(workspace_bytes_)));
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    *status = cublasLtMatmulAlgoGetHeuristic(handle_, d.op, d.a, d.b, d.c, d.c, d.pref, 1, &result, &found);
    const bool usable = *status == CUBLAS_STATUS_SUCCESS && found > 0;
    it = cache.emplace(key, usable ? std::optional<cublasLtMatmulAlgo_t>(result.algo) : std::nullopt).first;
  }
  return it->second ? &*it->second : nullptr;
}

Gemm::Gemm() {
  QUARTET_CUBLAS_CHECK(cublasLtCreate(&handle_));
  workspace_ = device_alloc(workspace_bytes_);
}

Gemm::~Gemm() {
  plans_.clear();  // their descriptors before the handle
  if (handle_) cublasLtDestroy(handle_);
}

// A BF16 problem's descriptors and algorithm, made once per shape: creating four descriptors
// on every call cost the host more than launching the GEMM itself.
struct Gemm::Plan {
  Descriptors d;
  const cublasLtMatmulAlgo_t* algo = nullptr;  // into algos_; null when cuBLASLt has none
  cublasStatus_t status = CUBLAS_STATUS_SUCCESS;
};

Gemm::Plan& Gemm::bf16_plan(std::int64_t m, std::int64_t n, std::int64_t k, bool at, bool bt, DType out_dtype) {
  const Key key{m, n, k, at, bt, static_cast<int>(out_dtype)};
  auto it = plans_.find(key);
  if (it != plans_.end()) return *it->second;
  // Column-major view: D (n x m, ld n) = op(B) (n x k) * op(A) (k x m).
  auto plan = std::make_unique<Plan>();
  Descriptors& d = plan->d;
  const cublasOperation_t op_first = bt ? CUBLAS_OP_N : CUBLAS_OP_T;
  const cublasOperation_t op_second = at ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasLtPointerMode_t mode = CUBLASLT_POINTER_MODE_DEVICE;
  QUARTET_CUBLAS_CHECK(cublasLtMatmulDescCreate(&d.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  QUARTET_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSA, &op_first, sizeof(op_first)));
  QUARTET_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSB, &op_second, sizeof(op_second)));
  QUARTET_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_POINTER_MODE, &mode, sizeof(mode)));
  QUARTET_CUBLAS_CHECK(bt ? cublasLtMatrixLayoutCreate(&d.a, CUDA_R_16BF, static_cast<std::uint64_t>(n), static_cast<std::uint64_t>(k), n)
                          : cublasLtMatrixLayoutCreate(&d.a, CUDA_R_16BF, static_cast<std::uint64_t>(k), static_cast<std::uint64_t>(n), k));
  QUARTET_CUBLAS_CHECK(at ? cublasLtMatrixLayoutCreate(&d.b, CUDA_R_16BF, static_cast<std::uint64_t>(m), static_cast<std::uint64_t>(k), m)
                          : cublasLtMatrixLayoutCreate(&d.b, CUDA_R_16BF, static_cast<std::uint64_t>(k), static_cast<std::uint64_t>(m), k));
  QUARTET_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&d.c, cuda_type(out_dtype), static_cast<std::uint64_t>(n),
                                                  static_cast<std::uint64_t>(m), n));
  plan->algo = cached_algo(algos_, key, d, &plan->status);
  return *plans_.emplace(key, std::move(plan)).first->second;
}

void Gemm::run(void* out, DType out_dtype, const void* a, bool at, const void* b, bool bt, std::int64_t m,
               std::int64_t n, std::int64_t k, const float* alpha, const float* beta, cudaStream_t stream) {
  const Plan& p = bf16_plan(m, n, k, at, bt, out_dtype);
  if (p.algo == nullptr) {
    throw Error(fmt::format("cuBLASLt has no algorithm for a {} x {} x {} BF16 GEMM (status {})", m, n, k,
                            static_cast<int>(p.status)));
  }
  QUARTET_CUBLAS_CHECK(cublasLtMatmul(handle_, p.d.op, alpha, b, p.d.a, a, p.d.b, beta, out, p.d.c, out, p.d.c, p.algo,
                                      workspace_.get(), workspace_bytes_, stream));
}

bool Gemm::run_nvfp4(void* out, DType out_dtype, const void* a, const void* a_scales, const void* b, const void* b_scales,
                     std::int64_t m, std::int64_t n, std::int64_t k, const float* alpha, const float* beta,
                     cudaStream_t stream) {
  // Column-major view as in run(): D (n x m) = B^T-stored (k x n, op T) times A (k x m, op N);
  // cuBLASLt's "A" is our B, so its scales are B's.
  Descriptors d;
  const cublasOperation_t t = CUBLAS_OP_T, nt = CUBLAS_OP_N;
  const cublasLtPointerMode_t mode = CUBLASLT_POINTER_MODE_DEVICE;
  const cublasLtMatmulMatrixScale_t vec16 = CUBLASLT_MATMUL_MATRIX_SCALE_VEC16_UE4M3;
  QUARTET_CUBLAS_CHECK(cublasLtMatmulDescCreate(&d.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  QUARTET_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSA, &t, sizeof(t)));
  QUARTET_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSB, &nt, sizeof(nt)));
  QUARTET_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_POINTER_MODE, &mode, sizeof(mode)));
  QUARTET_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &vec16, sizeof(vec16)));
  QUARTET_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &vec16, sizeof(vec16)));
  QUARTET_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &b_scales, sizeof(b_scales)));
  QUARTET_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &a_scales, sizeof(a_scales)));
  const auto u = [](std::int64_t v) { return static_cast<std::uint64_t>(v); };
  QUARTET_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&d.a, CUDA_R_4F_E2M1, u(k), u(n), k));
  QUARTET_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&d.b, CUDA_R_4F_E2M1, u(k), u(m), k));
  QUARTET_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&d.c, cuda_type(out_dtype), u(n), u(m), n));
  cublasStatus_t status = CUBLAS_STATUS_SUCCESS;
  const cublasLtMatmulAlgo_t* algo = cached_algo(fp4_algos_, Key{m, n, k, false, false, static_cast<int>(out_dtype)}, d, &status);
  if (algo == nullptr) return false;  // the caller emulates this shape
  QUARTET_CUBLAS_CHECK(cublasLtMatmul(handle_, d.op, alpha, b, d.a, a, d.b, beta, out, d.c, out, d.c, algo,
                                      workspace_.get(), workspace_bytes_, stream));
  return true;
}

bool Gemm::native_nvfp4() {
  if (native_ >= 0) return native_ == 1;
  // A 128 x 128 x 128 block-scaled FP4 problem; only the heuristic query is made.
  Descriptors d;
  const std::int64_t s = 128;
  const cublasOperation_t t = CUBLAS_OP_T, nt = CUBLAS_OP_N;
  const cublasLtMatmulMatrixScale_t vec16 = CUBLASLT_MATMUL_MATRIX_SCALE_VEC16_UE4M3;
  auto scales = device_alloc(2 * 128 * 8);
  void* sa = scales.get();
  void* sb = static_cast<char*>(scales.get()) + 1024;
  cublasStatus_t status = cublasLtMatmulDescCreate(&d.op, CUBLAS_COMPUTE_32F, CUDA_R_32F);
  if (status == CUBLAS_STATUS_SUCCESS) {
    cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSA, &t, sizeof(t));
    cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSB, &nt, sizeof(nt));
    cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &vec16, sizeof(vec16));
    cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &vec16, sizeof(vec16));
    cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &sa, sizeof(sa));
    cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &sb, sizeof(sb));
    cublasLtMatrixLayoutCreate(&d.a, CUDA_R_4F_E2M1, s, s, s);
    cublasLtMatrixLayoutCreate(&d.b, CUDA_R_4F_E2M1, s, s, s);
    cublasLtMatrixLayoutCreate(&d.c, CUDA_R_16BF, s, s, s);
    cublasLtMatmulPreferenceCreate(&d.pref);
    cublasLtMatmulPreferenceSetAttribute(d.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes_,
                                         sizeof(workspace_bytes_));
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    status = cublasLtMatmulAlgoGetHeuristic(handle_, d.op, d.a, d.b, d.c, d.c, d.pref, 1, &result, &found);
    if (status == CUBLAS_STATUS_SUCCESS && found == 0) status = CUBLAS_STATUS_NOT_SUPPORTED;
  }
  native_ = status == CUBLAS_STATUS_SUCCESS ? 1 : 0;
  native_status_ = native_ ? "cuBLASLt NVFP4 (CUDA_R_4F_E2M1, VEC16_UE4M3) supported: native block-scaled GEMM"
                           : fmt::format("cuBLASLt NVFP4 GEMM answered status {} (NOT_SUPPORTED is 15): exact "
                                         "emulation through BF16 tensor cores",
                                         static_cast<int>(status));
  return native_ == 1;
}

}  // namespace quartet::cuda

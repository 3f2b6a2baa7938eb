// The table of Backend operations shared by the cross-backend test (tests/cuda/ops_table_test.cpp,
// tests/backend/op_cases_test.cpp) and the performance mode (ops_bench.h), in the manner of
// ggml's test-backend-ops: one entry per operation, with small awkward test shapes, realistic
// benchmark shapes, a builder that makes the case's inputs on any backend from a seed, what the
// case costs (bytes or FLOPs) and how its outputs are compared across backends.
//
// Dtypes are named as the GPU stores them (BF16 activations, FP32 parameters); on each backend
// they map onto its own (on_backend): the CPU backend is the same, the FP64 reference backend
// keeps both in f64.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "quartet/backend/backend.h"

namespace quartet::ops {

// out[m][n] (+)= sum_k A[m][k] B[n][k], A stored [m, k] or (a_transposed) [k, m], likewise B.
struct GemmShape {
  std::int64_t m = 0, n = 0, k = 0;
  bool a_transposed = false, b_transposed = false, accumulate = false;
};

// One shape an entry runs at. Each entry reads only the fields it documents.
struct OpShape {
  std::string label;
  DType dtype = DType::bf16;  // the operation's main tensors as the GPU stores them (gemm: its output)
  std::int64_t rows = 0;      // tokens, or the elements of a flat buffer
  std::int64_t cols = 0;      // features
  std::int64_t vocab = 0;     // embedding table rows, cross-entropy classes
  std::int64_t mask_every = 0;  // cross_entropy: rows 1, 1 + k, 1 + 2k, ... have target -1 (none if 0)
  AttentionShape attention{};
  GemmShape gemm{};
  std::vector<ParameterSegment> segments;  // adamw_step: rows is the flat buffers' size
  double scale = 1.0;                      // adamw_step: the gradients' magnitude
  bool finite_loss = true;                 // adamw_step: status[kStepLoss] finite (else the step is skipped)

  nlohmann::json to_json() const;
};

// How a GPU output is compared with the CPU's.
enum class CompareKind {
  bitwise,           // the same bits (NaN matches NaN)
  bounded,           // |got - expected| <= bound, per element (Tolerance::bound)
  versus_reference,  // max|got - ref| <= factor max|expected - ref| + floor max|ref|, per tensor
};

struct Tolerance {
  CompareKind kind = CompareKind::bitwise;
  // bounded: bf16_ulps BF16 ulps of |expected| + relative |expected| + floor_of_max max|expected|
  // (an absolute floor, scaled to the tensor) + element_bound[i] (when not empty: an
  // accumulation bound worked out from the inputs).
  double bf16_ulps = 0;
  double relative = 0;
  double floor_of_max = 0;
  std::vector<double> element_bound;
  // versus_reference (the other backend's output is `expected`, the FP64 reference's `ref`).
  double reference_factor = 0;
  double reference_floor = 0;

  double bound(std::size_t i, double expected, double max_expected) const;
};

Tolerance bitwise();
Tolerance within(double bf16_ulps, double relative, double floor_of_max = 0, std::vector<double> element_bound = {});
Tolerance versus_reference(double factor, double floor_of_max_ref);

struct Mismatch {
  std::int64_t index = 0;
  double got = 0, expected = 0, bound = 0;
};

struct Comparison {
  std::int64_t failures = 0;      // elements outside the bound
  std::vector<Mismatch> first;    // the first few of them
  std::string criterion;          // versus_reference: the tensor-level numbers
  bool ok() const { return failures == 0; }
};

// got: the backend under test; expected: the other one (the CPU); reference: the FP64
// reference backend's values (versus_reference only). Throws Error on a size mismatch.
Comparison compare_output(const Tolerance& tolerance, const std::vector<double>& got, const std::vector<double>& expected,
                          const std::vector<double>& reference = {}, std::size_t keep_first = 5);

// Host values of one input tensor, from the stream that the case's seed and the tensor's
// name select (counter-based: the values do not depend on the order tensors are made in).
using Generator = std::function<std::vector<double>(std::uint64_t stream, std::int64_t count)>;
Generator normal_values(double scale);
Generator squared_values(double scale);                               // positive (second moments)
Generator token_values(std::int64_t vocab, std::int64_t mask_every);  // uniform ids; rows 1, 1 + k, ... get -1 if k > 0
Generator fixed_values(std::vector<double> values);

// A dtype named as the GPU stores it, on `be`: BF16 -> activation_dtype(), FP32 -> param_dtype().
DType on_backend(const Backend& be, DType gpu_dtype);

// The inputs of one case, shared by every backend it is built on. Values are generated on the
// host, rounded to the dtype the GPU stores (so the FP64 reference sees BF16-representable
// values too) and uploaded; with `for_comparison`, the values the first backend stored (its
// download) are kept and every later backend gets exactly those, as cuda_backend_test.cpp's
// pair() does, so all backends compute from identical inputs.
class CaseInputs {
 public:
  CaseInputs(std::uint64_t seed, bool for_comparison);

  bool for_comparison() const { return for_comparison_; }
  // The values of input `name` (rounded to `gpu_dtype`): the kept ones once a backend has
  // stored them. Builders use them to derive inputs (rstd) and tolerances.
  std::vector<double> values(const std::string& name, std::int64_t count, DType gpu_dtype, const Generator& generate);
  // The input on `be`, in on_backend(be, gpu_dtype), or in gpu_dtype itself when `exact_dtype`
  // (tensors whose dtype does not follow the backend: the BF16 parameter copy, f64 status).
  Tensor tensor(Backend& be, const std::string& name, const Shape& shape, DType gpu_dtype, const Generator& generate,
                bool exact_dtype = false);

 private:
  std::uint64_t stream(const std::string& name) const;

  std::uint64_t seed_;
  bool for_comparison_;
  std::map<std::string, std::vector<double>> kept_;
  std::set<std::string> stored_;  // inputs a backend has stored (kept_ then holds its download)
};

struct OpOutput {
  std::string name;
  std::function<std::vector<double>()> read;  // the output's values on the host (a download)
  Tolerance tolerance;
};

// A case built on one backend: `run` performs the operation (and nothing else, so it can be
// timed); the outputs are read after it ran.
struct OpRun {
  std::function<void()> run;
  std::vector<OpOutput> outputs;
};

// What one run costs: the DRAM traffic if every input is read once and every output written
// once (the least any implementation moves), and, for compute-bound operations, the FLOPs.
struct OpCost {
  double bytes = 0;
  double flops = 0;  // > 0: reported as TFLOP/s against the BF16 GEMM, else as TB/s against the copy
};

struct OpEntry {
  std::string name;  // the Backend operation (and variant)
  std::vector<OpShape> test_shapes;
  std::vector<OpShape> bench_shapes;  // smallest first: `bench --quick` runs the first only
  std::function<OpRun(Backend&, const OpShape&, CaseInputs&)> build;
  std::function<OpCost(const OpShape&)> cost;
};

const std::vector<OpEntry>& op_table();
const OpEntry& op_entry(const std::string& name);  // throws Error for an unknown name

// "op/<name>/<shape label>/<dtype>", the benchmark rows' and the test messages' case name.
std::string case_name(const OpEntry& entry, const OpShape& shape);
// A seed per case, so that every case has its own inputs and reruns get the same ones.
std::uint64_t case_seed(const OpEntry& entry, const OpShape& shape);

}  // namespace quartet::ops

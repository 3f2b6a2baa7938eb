#include "quartet/train/diagnostics.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>

#include "quartet/error.h"
#include "quartet/numerics/hadamard.h"
#include "quartet/numerics/quantizer.h"
#include "quartet/util/json_number.h"

namespace quartet {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

double ratio(double numerator, double denominator) {
  if (denominator > 0) return numerator / denominator;
  return numerator == 0 && denominator == 0 ? 0.0 : kNaN;
}

// NaN (and infinities, which JSON has not either) as null.

// The figures of one GEMM, named by its operands: {"x_err", "w_err", "out_err", "cosine", "norm_ratio"}.
nlohmann::ordered_json gemm_figures(const std::string& a_name, double a_error, const std::string& b_name,
                                    double b_error, const VectorComparison& product) {
  nlohmann::ordered_json j;
  j[a_name + "_err"] = number_or_null<nlohmann::ordered_json>(a_error);
  j[b_name + "_err"] = number_or_null<nlohmann::ordered_json>(b_error);
  j["out_err"] = number_or_null<nlohmann::ordered_json>(product.relative_error);
  j["cosine"] = number_or_null<nlohmann::ordered_json>(product.cosine);
  j["norm_ratio"] = number_or_null<nlohmann::ordered_json>(product.norm_ratio);
  return j;
}

}  // namespace

VectorComparison compare_vectors(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size()) throw Error(fmt::format("compare_vectors: {} and {} elements", a.size(), b.size()));
  double diff = 0, aa = 0, bb = 0, ab = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const double d = a[i] - b[i];
    diff += d * d;
    aa += a[i] * a[i];
    bb += b[i] * b[i];
    ab += a[i] * b[i];
  }
  VectorComparison c;
  c.relative_error = std::sqrt(ratio(diff, bb));
  c.norm_ratio = std::sqrt(ratio(aa, bb));
  c.cosine = aa > 0 && bb > 0 ? ab / (std::sqrt(aa) * std::sqrt(bb)) : kNaN;
  return c;
}

void check_token_limit(std::int64_t limit, std::string_view what) {
  if (limit < 0 || limit % kDiagnosticsTokenMultiple != 0) {
    throw Error(fmt::format("{} must be 0 (whole tensors) or a multiple of {}, got {}", what, kDiagnosticsTokenMultiple,
                            limit));
  }
}

namespace {

// The first min(rows, row_limit) rows of a tensor whose first dimension counts rows (all of it
// for a limit of 0), as a view: only those are downloaded.
Tensor leading_rows(const Tensor& t, std::int64_t row_limit) {
  const std::int64_t rows = t.shape().empty() ? 1 : t.shape().front();
  if (row_limit == 0 || rows <= row_limit) return t;
  Shape shape = t.shape();
  shape.front() = row_limit;
  return t.view(0, shape);
}

}  // namespace

double operand_relative_error(Backend& backend, const ProbedOperand& operand, std::int64_t row_limit) {
  check_token_limit(row_limit);
  const QTensor& q = operand.quantized;
  const std::int64_t rows = q.rows, cols = q.cols;
  // The exact tensor's own shape: [cols, rows] when the operand is its transpose.
  const std::int64_t exact_rows = operand.transposed ? cols : rows, exact_cols = operand.transposed ? rows : cols;
  operand.exact.expect(operand.name, {exact_rows, exact_cols}, operand.exact.dtype());
  // The exact tensor's leading rows are the operand's leading rows, or its leading columns when it
  // is the transpose: whole scale groups and rotation blocks, as the limit is a multiple of 128.
  const std::int64_t kept = row_limit > 0 ? std::min(exact_rows, row_limit) : exact_rows;
  QuantizedTensor quantized = backend.download_quantized(q);
  if (kept < exact_rows) {
    quantized = operand.transposed ? leading_block(quantized, rows, kept) : leading_block(quantized, kept, cols);
  }
  const std::int64_t q_rows = quantized.rows, q_cols = quantized.cols;
  const std::vector<float> approx = dequantize_unrotated(quantized, operand.rotation);
  std::vector<double> exact = backend.download(leading_rows(operand.exact, kept));
  if (operand.exact_rotation.enabled()) {
    std::vector<float> rotated(exact.begin(), exact.end());
    rotate_rows(rotated.data(), kept, exact_cols, exact_cols, operand.exact_rotation);
    exact.assign(rotated.begin(), rotated.end());
  }
  std::vector<double> reference(static_cast<std::size_t>(q_rows * q_cols));
  for (std::int64_t r = 0; r < q_rows; ++r) {
    for (std::int64_t c = 0; c < q_cols; ++c) {
      reference[static_cast<std::size_t>(r * q_cols + c)] =
          exact[static_cast<std::size_t>(operand.transposed ? c * exact_cols + r : r * q_cols + c)];
    }
  }
  return compare_vectors(std::vector<double>(approx.begin(), approx.end()), reference).relative_error;
}

GemmDiagnostics measure_gemm(Backend& backend, const ProbedGemm& gemm, std::int64_t token_limit) {
  check_token_limit(token_limit);
  GemmDiagnostics d;
  d.gemm = gemm.gemm;
  d.a_name = gemm.a.name;
  d.b_name = gemm.b.name;
  // Rows are tokens in the A operand (X, E, E's rows in Eᵀ), in Xᵀ's exact X, and in the forward
  // and dgrad products; the weights and the weight gradient have none and are measured whole.
  const bool wgrad = gemm.gemm == LinearGemm::wgrad;
  d.a_error = operand_relative_error(backend, gemm.a, token_limit);
  d.b_error = operand_relative_error(backend, gemm.b, wgrad ? token_limit : 0);
  const std::int64_t product_rows = wgrad ? 0 : token_limit;
  const Tensor product = gemm.product(), exact = gemm.exact_product();
  d.product = compare_vectors(backend.download(leading_rows(product, product_rows)),
                              backend.download(leading_rows(exact, product_rows)));
  return d;
}

QuantDiagnostics::QuantDiagnostics(Backend& backend, std::int64_t token_limit)
    : backend_(backend), token_limit_(token_limit), reached_(backend.make_device_mark()) {
  check_token_limit(token_limit);
}

void QuantDiagnostics::observe(const std::string& layer, const ProbedGemm& gemm) {
  // The device runs the step up to this GEMM first: the measurement's downloads would wait for
  // it, and that wait is the step's time, which the trainer counts.
  reached_->record();
  reached_->seconds_since(*reached_);
  const auto start = std::chrono::steady_clock::now();
  auto it = std::find_if(layers_.begin(), layers_.end(), [&](const Layer& l) { return l.name == layer; });
  if (it == layers_.end()) it = layers_.insert(layers_.end(), Layer{layer, {}});
  it->gemms.push_back(measure_gemm(backend_, gemm, token_limit_));
  seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

nlohmann::ordered_json QuantDiagnostics::to_json(std::int64_t step) const {
  nlohmann::ordered_json layers = nlohmann::ordered_json::object();
  // Per GEMM kind: the operand names and the sums of each figure over the layers.
  struct Sum {
    std::string a_name, b_name;
    double a = 0, b = 0;
    VectorComparison product;
    int count = 0;
  };
  Sum sums[3];
  for (const Layer& l : layers_) {
    nlohmann::ordered_json j = nlohmann::ordered_json::object();
    for (const GemmDiagnostics& g : l.gemms) {
      j[gemm_name(g.gemm)] = gemm_figures(g.a_name, g.a_error, g.b_name, g.b_error, g.product);
      Sum& s = sums[static_cast<int>(g.gemm)];
      s.a_name = g.a_name;
      s.b_name = g.b_name;
      s.a += g.a_error;
      s.b += g.b_error;
      s.product.relative_error += g.product.relative_error;
      s.product.cosine += g.product.cosine;
      s.product.norm_ratio += g.product.norm_ratio;
      ++s.count;
    }
    layers[l.name] = std::move(j);
  }
  nlohmann::ordered_json mean = nlohmann::ordered_json::object();
  for (LinearGemm gemm : {LinearGemm::forward, LinearGemm::dgrad, LinearGemm::wgrad}) {
    const Sum& s = sums[static_cast<int>(gemm)];
    if (s.count == 0) continue;
    const double n = s.count;
    mean[gemm_name(gemm)] =
        gemm_figures(s.a_name, s.a / n, s.b_name, s.b / n,
                     VectorComparison{s.product.relative_error / n, s.product.norm_ratio / n, s.product.cosine / n});
  }
  nlohmann::ordered_json record;
  record["kind"] = "diagnostics";
  record["step"] = step;
  record["seconds"] = seconds_;
  record["token_limit"] = token_limit_;
  record["layers"] = std::move(layers);
  record["mean"] = std::move(mean);
  return record;
}

}  // namespace quartet

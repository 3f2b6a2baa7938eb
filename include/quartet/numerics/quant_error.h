// The quantization-error protocol of numerics.md §8, as a library function (the
// `quartet quant-error` command formats its result; the tests run it at small sizes).
//
// Input: rows x cols i.i.d. samples (Gaussian by default), row r multiplied by
// 2^(8 r / (rows - 1)) (log-uniform in [1, 256]). Each NVFP4 quantizer runs after an RHT-128
// with random signs and groups of 16; the MXFP4 quantizers use their own rotation and group
// size of 32 (QuEST: the fixed Hadamard-32; the backward quantizers: an RHT-32 with random
// signs). The result is rotated back and compared with the input:
//   relative MSE  = mean over rows of ||x - x^||^2 / ||x||^2
//   effective bits = -log2(relative MSE) / 2
//   misalignment  = 1 - mean over rows of <x, x^> / <x, x>
// With draws = B > 1 every draw uses fresh rotation signs and fresh rounding bits; the
// per-draw figures are averaged, and the error of the mean of the B reconstructions is
// reported too (for an unbiased quantizer it falls like 1/B).
#pragma once

#include <cstdint>
#include <functional>
#include <string_view>
#include <vector>

#include "quartet/numerics/quantizer.h"

namespace quartet {

enum class Distribution : std::uint8_t { gaussian, laplace, student_t3 };

const char* distribution_name(Distribution d);
Distribution parse_distribution(std::string_view name);  // throws Error

struct QuantErrorConfig {
  std::int64_t rows = std::int64_t{1} << 20;
  std::int64_t cols = 128;  // a multiple of 128
  Distribution distribution = Distribution::gaussian;
  int draws = 1;
  std::uint64_t seed = 0;
  std::vector<QuantizerKind> quantizers{kAllQuantizers.begin(), kAllQuantizers.end()};

  void validate() const;  // throws Error
};

struct QuantErrorResult {
  QuantizerKind quantizer = QuantizerKind::rtn;
  int rotation_size = 0;
  double rel_mse = 0;         // mean over rows (and over draws)
  double rel_mse_stderr = 0;  // standard error of rel_mse from the spread over rows
  double eff_bits = 0;
  double misalignment = 0;
  double rel_mse_mean_of_draws = 0;  // only meaningful when draws > 1
};

// The protocol's rotation for a quantizer in draw `draw` (fresh signs per draw).
Rotation quant_error_rotation(QuantizerKind kind, std::uint64_t seed, int draw);

// The protocol input, a pure function of its arguments.
std::vector<float> make_quant_error_input(std::int64_t rows, std::int64_t cols, Distribution d,
                                          std::uint64_t seed);

// progress(done, total) is called after each (quantizer, draw) pass.
using ProgressCallback = std::function<void(int done, int total)>;
std::vector<QuantErrorResult> run_quant_error(const QuantErrorConfig& config,
                                              const ProgressCallback& progress = {});

}  // namespace quartet

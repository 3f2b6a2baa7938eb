#include "quartet/numerics/quant_error.h"

#include <cmath>
#include <fmt/format.h>

#include "quartet/error.h"
#include "numerics/parallel.h"

namespace quartet {

namespace {

// Philox streams of the protocol (distinct from every stream the trainer uses for layers).
constexpr std::uint32_t kInputStream = 0x51A70000u;
constexpr std::uint32_t kRotationStream = 0x51A70001u;
constexpr std::uint32_t kRoundingStreamBase = 0x51A70100u;  // + quantizer index

double uniform_open(std::uint32_t k) { return (static_cast<double>(k) + 0.5) * 0x1p-32; }

// Two standard normals from two uniforms (Box-Muller), in double.
void box_muller(std::uint32_t a, std::uint32_t b, double* z0, double* z1) {
  const double radius = std::sqrt(-2.0 * std::log(uniform_open(a)));
  const double angle = 2.0 * M_PI * uniform_open(b);
  *z0 = radius * std::cos(angle);
  *z1 = radius * std::sin(angle);
}

double sample(Distribution d, const RandomContext& ctx, std::uint32_t row, std::uint32_t col) {
  switch (d) {
    case Distribution::gaussian: {
      const PhiloxWords w = philox_block(ctx, row, col / 4);
      double z[4];
      box_muller(w.x, w.y, &z[0], &z[1]);
      box_muller(w.z, w.w, &z[2], &z[3]);
      return z[col % 4];
    }
    case Distribution::laplace: {
      // Unit-variance Laplace (b = 1/sqrt(2)) by inverting the CDF.
      const double u = uniform_open(philox_block(ctx, row, col / 4)[col % 4]) - 0.5;
      return -std::copysign(std::log1p(-2.0 * std::fabs(u)), u) / std::sqrt(2.0);
    }
    case Distribution::student_t3: {
      // z0 / sqrt(chi2_3 / 3), all four normals from one block of its own.
      const PhiloxWords w = philox_block(ctx, row, col);
      double z[4];
      box_muller(w.x, w.y, &z[0], &z[1]);
      box_muller(w.z, w.w, &z[2], &z[3]);
      return z[0] / std::sqrt((z[1] * z[1] + z[2] * z[2] + z[3] * z[3]) / 3.0);
    }
  }
  return 0.0;
}

struct RowStats {
  std::vector<double> rel;    // ||x - x^||^2 / ||x||^2
  std::vector<double> align;  // <x, x^> / <x, x>
};

RowStats row_stats(const std::vector<float>& x, const std::vector<float>& xhat, std::int64_t rows, std::int64_t cols) {
  RowStats s{std::vector<double>(static_cast<std::size_t>(rows)), std::vector<double>(static_cast<std::size_t>(rows))};
#pragma omp parallel for schedule(static) if (worth_parallel(rows * cols))
  for (std::int64_t r = 0; r < rows; ++r) {
    double err = 0, norm = 0, dot = 0;
    for (std::int64_t c = 0; c < cols; ++c) {
      const double a = x[static_cast<std::size_t>(r * cols + c)], b = xhat[static_cast<std::size_t>(r * cols + c)];
      err += (a - b) * (a - b);
      norm += a * a;
      dot += a * b;
    }
    s.rel[static_cast<std::size_t>(r)] = norm > 0 ? err / norm : 0.0;
    s.align[static_cast<std::size_t>(r)] = norm > 0 ? dot / norm : 1.0;
  }
  return s;
}

double mean_of(const std::vector<double>& v) {
  double sum = 0;  // serial: the same result for any thread count
  for (double e : v) sum += e;
  return sum / static_cast<double>(v.size());
}

std::uint32_t quantizer_index(QuantizerKind kind) {
  for (std::size_t i = 0; i < kAllQuantizers.size(); ++i) {
    if (kAllQuantizers[i] == kind) return static_cast<std::uint32_t>(i);
  }
  return 0;
}

}  // namespace

const char* distribution_name(Distribution d) {
  switch (d) {
    case Distribution::gaussian: return "gaussian";
    case Distribution::laplace: return "laplace";
    case Distribution::student_t3: return "student-t3";
  }
  return "?";
}

Distribution parse_distribution(std::string_view name) {
  for (Distribution d : {Distribution::gaussian, Distribution::laplace, Distribution::student_t3}) {
    if (name == distribution_name(d)) return d;
  }
  throw Error(fmt::format("unknown distribution '{}'; expected gaussian, laplace or student-t3", name));
}

void QuantErrorConfig::validate() const {
  if (rows < 1 || rows > (std::int64_t{1} << 26)) {
    throw Error(fmt::format("quant-error: --rows must be between 1 and 2^26, got {}", rows));
  }
  if (cols < 128 || cols % 128 != 0 || cols > 65536) {
    throw Error(fmt::format("quant-error: columns must be a positive multiple of 128 (at most 65536), got {}", cols));
  }
  if (draws < 1 || draws > 4096) throw Error(fmt::format("quant-error: --draws must be between 1 and 4096, got {}", draws));
  if (quantizers.empty()) throw Error("quant-error: no quantizers selected");
}

Rotation quant_error_rotation(QuantizerKind kind, std::uint64_t seed, int draw) {
  const RandomContext ctx{seed, kRotationStream, static_cast<std::uint32_t>(draw)};
  switch (kind) {
    case QuantizerKind::mxfp4_quest: return Rotation::hadamard(32);
    case QuantizerKind::mxfp4_rtn:
    case QuantizerKind::mxfp4_sr: return Rotation::random(32, ctx);
    default: return Rotation::random(128, ctx);
  }
}

std::vector<float> make_quant_error_input(std::int64_t rows, std::int64_t cols, Distribution d, std::uint64_t seed) {
  std::vector<float> x(static_cast<std::size_t>(rows * cols));
  const RandomContext ctx{seed, kInputStream, 0};
#pragma omp parallel for schedule(static) if (worth_parallel(rows * cols))
  for (std::int64_t r = 0; r < rows; ++r) {
    const double scale = rows > 1 ? std::exp2(8.0 * static_cast<double>(r) / static_cast<double>(rows - 1)) : 1.0;
    for (std::int64_t c = 0; c < cols; ++c) {
      x[static_cast<std::size_t>(r * cols + c)] =
          static_cast<float>(scale * sample(d, ctx, static_cast<std::uint32_t>(r), static_cast<std::uint32_t>(c)));
    }
  }
  return x;
}

std::vector<QuantErrorResult> run_quant_error(const QuantErrorConfig& config, const ProgressCallback& progress) {
  config.validate();
  const std::int64_t rows = config.rows, cols = config.cols;
  const std::vector<float> x = make_quant_error_input(rows, cols, config.distribution, config.seed);
  const ConstMatrixView view(x.data(), rows, cols);
  const int total = static_cast<int>(config.quantizers.size()) * config.draws;
  int done = 0;

  std::vector<QuantErrorResult> results;
  for (QuantizerKind kind : config.quantizers) {
    const QuantizerSpec spec = QuantizerSpec::defaults(kind);
    std::vector<double> rel_sum(static_cast<std::size_t>(rows), 0.0), align_sum(static_cast<std::size_t>(rows), 0.0);
    std::vector<float> mean_reconstruction;
    if (config.draws > 1) mean_reconstruction.assign(x.size(), 0.0f);
    QuantErrorResult result;
    result.quantizer = kind;

    for (int draw = 0; draw < config.draws; ++draw) {
      const Rotation rotation = quant_error_rotation(kind, config.seed, draw);
      result.rotation_size = rotation.size;
      const RandomContext rounding{config.seed, kRoundingStreamBase + quantizer_index(kind),
                                   static_cast<std::uint32_t>(draw)};
      const std::vector<float> xhat = dequantize_unrotated(quantize(view, spec, rotation, rounding), rotation);
      const RowStats s = row_stats(x, xhat, rows, cols);
      for (std::int64_t r = 0; r < rows; ++r) {
        rel_sum[static_cast<std::size_t>(r)] += s.rel[static_cast<std::size_t>(r)];
        align_sum[static_cast<std::size_t>(r)] += s.align[static_cast<std::size_t>(r)];
      }
      if (config.draws > 1) {
#pragma omp parallel for schedule(static) if (worth_parallel(static_cast<std::int64_t>(x.size())))
        for (std::int64_t i = 0; i < static_cast<std::int64_t>(x.size()); ++i) {
          mean_reconstruction[static_cast<std::size_t>(i)] += xhat[static_cast<std::size_t>(i)];
        }
      }
      if (progress) progress(++done, total);
    }

    for (std::int64_t r = 0; r < rows; ++r) {
      rel_sum[static_cast<std::size_t>(r)] /= config.draws;
      align_sum[static_cast<std::size_t>(r)] /= config.draws;
    }
    result.rel_mse = mean_of(rel_sum);
    double var = 0;
    for (double v : rel_sum) var += (v - result.rel_mse) * (v - result.rel_mse);
    result.rel_mse_stderr = rows > 1 ? std::sqrt(var / static_cast<double>(rows - 1) / static_cast<double>(rows)) : 0.0;
    result.eff_bits = -std::log2(result.rel_mse) / 2.0;
    result.misalignment = 1.0 - mean_of(align_sum);
    if (config.draws > 1) {
      const float inv = 1.0f / static_cast<float>(config.draws);
      for (float& v : mean_reconstruction) v *= inv;
      result.rel_mse_mean_of_draws = mean_of(row_stats(x, mean_reconstruction, rows, cols).rel);
    } else {
      result.rel_mse_mean_of_draws = result.rel_mse;
    }
    results.push_back(result);
  }
  return results;
}

}  // namespace quartet

// The picture of `quartet train --diagnostics N --out RUN` (docs/diagnostics.md): the
// diagnostics records of RUN/metrics.jsonl, averaged over the layers, drawn by gnuplot into
// RUN/diagnostics.png: each operand's relative quantization error, each GEMM's product error,
// cosine and norm ratio against the exact product, over the steps.
#pragma once

#include <array>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <vector>

namespace quartet::cli {

// The GEMMs and figures of a record's "mean" object, in column order.
inline constexpr int kDiagnosticGemms = 3;    // forward, dgrad, wgrad
inline constexpr int kDiagnosticFigures = 5;  // A's error, B's error, out_err, cosine, norm_ratio

// One {"kind": "diagnostics"} line: its step and the layers' mean figures (NaN where null or where
// the GEMM did not run quantized).
struct DiagnosticsRow {
  std::int64_t step = 0;
  std::array<bool, kDiagnosticGemms> present{};
  std::array<std::array<double, kDiagnosticFigures>, kDiagnosticGemms> mean{};
};

// The diagnostics lines of a metrics.jsonl, in file order (none: empty). Throws Error naming the
// file and line where a record lacks a field or is not what the trainer writes.
std::vector<DiagnosticsRow> read_diagnostics(const std::filesystem::path& metrics);

// RUN/diagnostics.png.
std::filesystem::path diagnostics_plot_path(const std::filesystem::path& run_dir);

// Draws the records of run_dir/metrics.jsonl into `png`, the gnuplot script (with the data
// inline) beside it. Returns false, drawing nothing, when there are no records. Throws Error on
// bad records or when gnuplot fails; the caller checks that gnuplot is installed.
bool plot_diagnostics(const std::filesystem::path& run_dir, const std::filesystem::path& png);

// The end of `quartet train --diagnostics N --out RUN`, after plot_finished_run: draws
// RUN/diagnostics.png when the run holds records. Nothing here fails the run: if drawing fails,
// one line on stderr says so; without gnuplot it does nothing (plot_finished_run's note covers
// both pictures). `report` receives the "diagnostics plot: PNG" line.
void plot_finished_diagnostics(const std::filesystem::path& run_dir, std::FILE* report = stdout);

}  // namespace quartet::cli

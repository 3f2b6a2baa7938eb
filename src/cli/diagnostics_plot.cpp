#include "cli/diagnostics_plot.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>

#include "cli/gnuplot.h"
#include "cli/training_plot.h"
#include "quartet/error.h"
#include "quartet/util/files.h"
#include "quartet/util/text.h"

namespace quartet::cli {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

struct GemmColumns {
  const char* gemm;                 // the key in "mean"
  const char* a;                    // its operands' names (linear.cpp's ProbedOperand names)
  const char* b;
  const char* a_label;              // as the legend shows them
  const char* b_label;
};
constexpr std::array<GemmColumns, kDiagnosticGemms> kGemms = {{{"forward", "x", "w", "X", "W"},
                                                               {"dgrad", "e", "wt", "E", "W^T"},
                                                               {"wgrad", "et", "xt", "E^T", "X^T"}}};

DiagnosticsRow parse_record(const nlohmann::json& j, const std::string& where) {
  DiagnosticsRow row;
  if (!j.contains("step") || !j.at("step").is_number_integer()) {
    throw Error(fmt::format("{}: diagnostics record without an integer \"step\"", where));
  }
  row.step = j.at("step").get<std::int64_t>();
  if (!j.contains("mean") || !j.at("mean").is_object()) {
    throw Error(fmt::format("{}: diagnostics record without a \"mean\" object", where));
  }
  const nlohmann::json& mean = j.at("mean");
  for (int g = 0; g < kDiagnosticGemms; ++g) {
    row.mean[g].fill(kNaN);
    if (!mean.contains(kGemms[g].gemm)) continue;
    const nlohmann::json& m = mean.at(kGemms[g].gemm);
    if (!m.is_object()) throw Error(fmt::format("{}: \"{}\" is not an object", where, kGemms[g].gemm));
    row.present[g] = true;
    const std::string a = fmt::format("{}_err", kGemms[g].a), b = fmt::format("{}_err", kGemms[g].b);
    row.mean[g] = {metrics_number(m, a.c_str(), where), metrics_number(m, b.c_str(), where),
                   metrics_number(m, "out_err", where), metrics_number(m, "cosine", where),
                   metrics_number(m, "norm_ratio", where)};
  }
  return row;
}

std::string datablock(const std::vector<DiagnosticsRow>& rows) {
  std::string s = "$diagnostics << EOD\n# step";
  for (const GemmColumns& g : kGemms) {
    s += fmt::format("  {0}: {1}_err {2}_err out_err cosine norm_ratio", g.gemm, g.a, g.b);
  }
  s += "\n";
  for (const DiagnosticsRow& r : rows) {
    s += fmt::format("{}", r.step);
    for (const auto& gemm : r.mean) {
      for (double v : gemm) s += fmt::format(" {}", gnuplot_number(v));
    }
    s += "\n";
  }
  return s + "EOD\n";
}

// Column of figure f of GEMM g in the data block (column 1 is the step).
int column(int g, int f) { return 2 + g * kDiagnosticFigures + f; }

// One panel's plot command: one curve per (present GEMM, figure), coloured by GEMM; the B operand
// dashed.
std::string panel(const std::array<bool, kDiagnosticGemms>& present, const std::vector<int>& figures,
                  const std::string& extra = "") {
  std::string s;
  for (int g = 0; g < kDiagnosticGemms; ++g) {
    if (!present[g]) continue;
    for (int f : figures) {
      const char* operand = f == 0 ? kGemms[g].a_label : f == 1 ? kGemms[g].b_label : "";
      const std::string title = fmt::format("{}{}{}", kGemms[g].gemm, *operand ? " " : "", operand);
      s += fmt::format("{}$diagnostics using 1:{} with linespoints lw 1.5 pt 7 ps 0.6 lt {} dt {} title {}",
                       s.empty() ? "plot " : ", \\\n  ", column(g, f), g + 1, f == 1 ? 2 : 1, gnuplot_quoted(title));
    }
  }
  return s + extra + "\n";
}

// The log axis of a panel of errors: the range of its figures' finite positive values.
std::string log_axis(const std::vector<DiagnosticsRow>& rows, const std::vector<int>& figures) {
  double lo = std::numeric_limits<double>::infinity(), hi = 0;
  for (const DiagnosticsRow& r : rows) {
    for (const auto& gemm : r.mean) {
      for (int f : figures) {
        if (std::isfinite(gemm[f]) && gemm[f] > 0) {
          lo = std::min(lo, gemm[f]);
          hi = std::max(hi, gemm[f]);
        }
      }
    }
  }
  return std::string(kGnuplotLogAxis) + gnuplot_log_tics(lo, hi);
}

std::string script(const std::vector<DiagnosticsRow>& rows, const std::string& label, const std::string& png_name) {
  std::array<bool, kDiagnosticGemms> present{};
  for (const DiagnosticsRow& r : rows) {
    for (int g = 0; g < kDiagnosticGemms; ++g) present[g] = present[g] || r.present[g];
  }
  // Errors may change by orders of magnitude (a diverging run): log scales. Cosines and norm
  // ratios sit near 1: linear ones. The legends go beside the panels, where no curve runs.
  const std::string linear_axis = kGnuplotLinearAxis;
  return fmt::format(
      "# Drawn by `quartet train --diagnostics`; `gnuplot {}` redraws {} from the data below.\n{}"
      "set terminal pngcairo noenhanced size 1400,900 font ',10'\n"
      "set output {}\n"
      "{}"
      "set multiplot layout 2,2 title {}\n"
      "set grid\nset xlabel 'step'\nset key outside right top\n"
      "set title 'operand quantization error ||Q(A) - A|| / ||A|| (log scale; dashed: B operand)'\n"
      "set ylabel 'relative error'\n{}{}"
      "set title 'product error ||G_q - G|| / ||G|| against the BF16 product of exact operands (log scale)'\n"
      "set ylabel 'relative error'\n{}{}"
      "set title 'cosine(G_q, G)'\nset ylabel 'cosine'\n{}{}"
      "set title 'norm ratio ||G_q|| / ||G||'\nset ylabel 'norm ratio'\n{}{}"
      "unset multiplot\n",
      gnuplot_comment_text(script_path(png_name).string()), gnuplot_comment_text(png_name), datablock(rows),
      gnuplot_quoted(png_name), kGnuplotLinetypes,
      gnuplot_quoted("quartet diagnostics: " + label + " (mean over the quantized linear layers, one micro-batch)"),
      log_axis(rows, {0, 1}), panel(present, {0, 1}), log_axis(rows, {2}), panel(present, {2}), linear_axis,
      panel(present, {3}), linear_axis,
      panel(present, {4}, ", \\\n  1 with lines lt 7 dt 3 title 'exact'"));
}

}  // namespace

std::vector<DiagnosticsRow> read_diagnostics(const std::filesystem::path& metrics) {
  std::vector<DiagnosticsRow> rows;
  read_json_lines(metrics, [&](const nlohmann::json& j, const std::string& where) {
    if (j.is_object() && j.contains("kind") && j.at("kind") == "diagnostics") rows.push_back(parse_record(j, where));
  });
  return rows;
}

std::filesystem::path diagnostics_plot_path(const std::filesystem::path& run_dir) {
  return run_dir / "diagnostics.png";
}

bool plot_diagnostics(const std::filesystem::path& run_dir, const std::filesystem::path& png) {
  const std::vector<DiagnosticsRow> rows = read_diagnostics(run_dir / "metrics.jsonl");
  if (rows.empty()) return false;
  const std::filesystem::path script_file = script_path(png);
  write_file_atomic(script_file, script(rows, run_label(run_dir), png.filename().string()));
  run_gnuplot(png.parent_path(), script_file.filename().string());
  return true;
}

void plot_finished_diagnostics(const std::filesystem::path& run_dir, std::FILE* report) {
  const std::filesystem::path png = diagnostics_plot_path(run_dir);
  if (!gnuplot_available()) return;  // plot_finished_run has said so, once
  try {
    if (plot_diagnostics(run_dir, png)) fmt::print(report, "diagnostics plot: {}\n", png.string());
  } catch (const Error& e) {
    fmt::print(stderr, "note: could not draw {}: {}\n", png.string(), e.what());
  }
}

}  // namespace quartet::cli

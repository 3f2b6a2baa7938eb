#include "cli/diagnose_plot.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "cli/gnuplot.h"
#include "cli/training_plot.h"
#include "quartet/error.h"
#include "quartet/util/files.h"
#include "quartet/util/text.h"

namespace quartet::cli {

namespace {

// A recipe's colour: the Okabe-Ito linetypes in order, leaving black (7) to the guide.
int recipe_linetype(std::size_t index) { return static_cast<int>(index % 7) + (index % 7 >= 6 ? 2 : 1); }

std::string curve_title(const MeanEstimator& m) {
  return fmt::format("{} vs {}", m.recipe, m.reference == GradientReference::exact ? "exact" : "fwd-quantized");
}

// One column per curve, one row per k (every curve has the same k).
std::string datablock(const std::vector<MeanEstimator>& means) {
  std::string s = "$bias << EOD\n# k";
  for (const MeanEstimator& m : means) s += fmt::format("  {}:{}", gemm_name(m.product), curve_title(m));
  s += "\n";
  const std::vector<std::int64_t>& ks = means.front().k;
  for (std::size_t i = 0; i < ks.size(); ++i) {
    s += fmt::format("{}", ks[i]);
    for (const MeanEstimator& m : means) s += fmt::format(" {}", gnuplot_number(i < m.bias.size() ? m.bias[i] : NAN));
    s += "\n";
  }
  return s + "EOD\n";
}

// The panel of one product: its curves (colour by recipe; dashed against the forward-quantized
// product) and the 1/sqrt(k) guide through the curves' mean value at k = 1.
std::string panel(const std::vector<MeanEstimator>& means, LinearGemm product, const std::vector<std::string>& recipes) {
  std::string plot;
  double anchor = 0;
  int anchored = 0;
  double lo = std::numeric_limits<double>::infinity(), hi = 0;
  for (std::size_t c = 0; c < means.size(); ++c) {
    const MeanEstimator& m = means[c];
    if (m.product != product) continue;
    const std::size_t recipe = static_cast<std::size_t>(std::find(recipes.begin(), recipes.end(), m.recipe) - recipes.begin());
    plot += fmt::format("{}$bias using 1:{} with linespoints lw 1.5 pt 7 ps 0.6 lt {} dt {} title {}",
                        plot.empty() ? "plot " : ", \\\n  ", c + 2, recipe_linetype(recipe),
                        m.reference == GradientReference::exact ? 1 : 2, gnuplot_quoted(curve_title(m)));
    for (double b : m.bias) {
      if (std::isfinite(b) && b > 0) {
        lo = std::min(lo, b);
        hi = std::max(hi, b);
      }
    }
    if (!m.bias.empty() && std::isfinite(m.bias.front()) && m.bias.front() > 0) {
      anchor += std::log(m.bias.front());
      ++anchored;
    }
  }
  if (plot.empty()) return "";
  const std::string title = product == LinearGemm::dgrad ? "dgrad: dX = E W" : "wgrad: dW = E^T X";
  std::string s = fmt::format("set title {}\n{}{}", gnuplot_quoted(title), kGnuplotLogAxis, gnuplot_log_tics(lo, hi));
  if (anchored > 0) {
    plot += fmt::format(", \\\n  {} / sqrt(x) with lines lt 7 dt 3 title '1/sqrt(k)'",
                        gnuplot_number(std::exp(anchor / anchored)));
  }
  return s + plot + "\n";
}

}  // namespace

void plot_diagnose(const std::vector<MeanEstimator>& means, const std::string& subtitle,
                   const std::filesystem::path& png) {
  if (means.empty()) throw Error("diagnose: nothing to draw");
  std::vector<std::string> recipes;
  for (const MeanEstimator& m : means) {
    if (std::find(recipes.begin(), recipes.end(), m.recipe) == recipes.end()) recipes.push_back(m.recipe);
  }
  std::string xtics;
  for (std::int64_t k : means.front().k) xtics += fmt::format("{}{}", xtics.empty() ? "" : ", ", k);
  const std::string png_name = png.filename().string();
  const std::string script = fmt::format(
      "# Drawn by `quartet diagnose`; `gnuplot {}` redraws {} from the data below.\n{}"
      "set terminal pngcairo noenhanced size 1400,1100 font ',10'\n"
      "set output {}\n"
      "{}"
      "set multiplot layout 2,1 title {}\n"
      "set grid\nset key outside right top\nset logscale x 2\nset xrange [{}:{}]\nset xtics ({})\n"
      "set xlabel 'draws averaged, k'\nset ylabel '||mean of k draws - G|| / ||G|| (mean over layers)'\n"
      "{}{}"
      "unset multiplot\n",
      gnuplot_comment_text(script_path(png_name).string()), gnuplot_comment_text(png_name), datablock(means),
      gnuplot_quoted(png_name), kGnuplotLinetypes,
      gnuplot_quoted("quartet diagnose: bias of the backward products over the draws averaged; " + subtitle),
      gnuplot_number(0.9 * static_cast<double>(means.front().k.front())),
      gnuplot_number(1.1 * static_cast<double>(means.front().k.back())), xtics, panel(means, LinearGemm::dgrad, recipes),
      panel(means, LinearGemm::wgrad, recipes));
  const std::filesystem::path script_file = script_path(png);
  write_file_atomic(script_file, script);
  run_gnuplot(png.parent_path(), script_file.filename().string());
}

}  // namespace quartet::cli

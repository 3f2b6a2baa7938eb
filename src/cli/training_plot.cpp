#include "cli/training_plot.h"

#include <fmt/format.h>

#include <cmath>
#include <algorithm>
#include <cstdio>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <utility>

#include "cli/gnuplot.h"
#include "quartet/error.h"
#include "quartet/util/files.h"
#include "quartet/util/text.h"

namespace quartet::cli {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

MetricsRow parse_row(const nlohmann::json& j, const std::string& where) {
  if (!j.is_object()) throw Error(fmt::format("{}: not a JSON object", where));
  MetricsRow r;
  if (!j.contains("step") || !j.at("step").is_number_integer()) {
    throw Error(fmt::format("{}: no integer \"step\" field", where));
  }
  r.step = j.at("step").get<std::int64_t>();
  r.loss = metrics_number(j, "loss", where);
  r.lr = metrics_number(j, "lr", where);
  r.grad_norm = metrics_number(j, "grad_norm", where);
  r.tokens_per_s = metrics_number(j, "tokens_per_s", where);
  if (j.contains("val_loss")) r.val_loss = metrics_number(j, "val_loss", where);
  return r;
}



struct Run {
  std::string label;
  std::vector<MetricsRow> rows;
};

// One datablock per run for the step series and one for its evaluations, so the script holds
// everything it draws and can be rerun or edited by hand.
std::string datablocks(const std::vector<Run>& runs) {
  std::string s;
  for (std::size_t k = 0; k < runs.size(); ++k) {
    s += fmt::format("# run {}: {}\n$train{} << EOD\n# step loss lr grad_norm tokens_per_s\n", k + 1,
                     gnuplot_comment_text(runs[k].label), k + 1);
    for (const MetricsRow& r : runs[k].rows) {
      s += fmt::format("{} {} {} {} {}\n", r.step, gnuplot_number(r.loss), gnuplot_number(r.lr),
                       gnuplot_number(r.grad_norm), gnuplot_number(r.tokens_per_s));
    }
    s += fmt::format("EOD\n$val{} << EOD\n# step val_loss\n", k + 1);
    for (const MetricsRow& r : runs[k].rows) {
      if (r.val_loss) s += fmt::format("{} {}\n", r.step, gnuplot_number(*r.val_loss));
    }
    s += "EOD\n";
  }
  return s;
}

bool has_val(const Run& run) {
  for (const MetricsRow& r : run.rows) {
    if (r.val_loss) return true;
  }
  return false;
}

// The plot command of one panel: column `column` of every run, one colour (linetype) per run.
std::string panel(const std::vector<Run>& runs, int column) {
  std::string s = "plot ";
  for (std::size_t k = 0; k < runs.size(); ++k) {
    s += fmt::format("{}$train{} using 1:{} with lines lw 1.5 lt {} title {}", k == 0 ? "" : ", \\\n  ", k + 1,
                     column, k + 1, gnuplot_quoted(runs[k].label));
  }
  return s + "\n";
}

// The loss panel: training loss as a thin line, validation loss as dashed points of the same colour.
std::string loss_panel(const std::vector<Run>& runs) {
  std::string s = "plot ";
  for (std::size_t k = 0; k < runs.size(); ++k) {
    s += fmt::format("{}$train{} using 1:2 with lines lw 1.2 lt {} title {}", k == 0 ? "" : ", \\\n  ", k + 1, k + 1,
                     gnuplot_quoted(runs[k].label + " (train)"));
    if (has_val(runs[k])) {
      s += fmt::format(", \\\n  $val{} using 1:2 with linespoints lw 2 dt 2 pt 7 ps 1 lt {} title {}", k + 1, k + 1,
                       gnuplot_quoted(runs[k].label + " (val)"));
    }
  }
  return s + "\n";
}

// The finite positive range of one column of every run's step data (or of the validation losses too).
std::pair<double, double> positive_range(const std::vector<Run>& runs, double MetricsRow::*field, bool with_val) {
  double lo = std::numeric_limits<double>::infinity(), hi = 0;
  const auto take = [&](double v) {
    if (std::isfinite(v) && v > 0) {
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
  };
  for (const Run& run : runs) {
    for (const MetricsRow& r : run.rows) {
      take(r.*field);
      if (with_val && r.val_loss) take(*r.val_loss);
    }
  }
  return {lo, hi};
}

std::string script(const std::vector<Run>& runs, const std::string& png_name) {
  std::string labels;
  for (const Run& r : runs) labels += (labels.empty() ? "" : ", ") + r.label;
  // Losses fall by a factor of a few and gradient norms over orders of magnitude: log scales keep
  // the late, small changes visible. Their ranges are the data's (yfix, plus a 5% margin) rather
  // than whole decades, which would squeeze the curves into a strip. noenhanced: a '_' in a
  // folder name is not a subscript. The colours stay distinct for the common colour blindnesses
  // (Okabe-Ito).
  const auto [loss_lo, loss_hi] = positive_range(runs, &MetricsRow::loss, true);
  const auto [norm_lo, norm_hi] = positive_range(runs, &MetricsRow::grad_norm, false);
  const std::string log_axis = kGnuplotLogAxis, linear_axis = kGnuplotLinearAxis;
  return fmt::format(
      "# Drawn by `quartet plot`; `gnuplot {}` redraws {} from the data below.\n{}"
      "set terminal pngcairo noenhanced size 1400,900 font ',10'\n"
      "set output {}\n"
      "{}"
      "set multiplot layout 2,2 title {}\n"
      "set grid\nset xlabel 'step'\nset key top right\n"
      "set title 'loss (log scale; dashed with points: validation)'\nset ylabel 'loss (nats per token)'\n{}{}{}"
      "set title 'learning rate'\nset ylabel 'learning rate'\n{}{}"
      "set title 'gradient norm (log scale, before clipping)'\nset ylabel 'gradient norm'\n{}{}{}"
      "set title 'throughput'\nset ylabel 'tokens per second'\n{}set yrange [0:*]\n{}"
      "unset multiplot\n",
      gnuplot_comment_text(script_path(png_name).string()), gnuplot_comment_text(png_name), datablocks(runs),
      gnuplot_quoted(png_name), kGnuplotLinetypes, gnuplot_quoted("quartet: " + labels), log_axis,
      gnuplot_log_tics(loss_lo, loss_hi), loss_panel(runs), linear_axis, panel(runs, 3), log_axis, gnuplot_log_tics(norm_lo, norm_hi),
      panel(runs, 4), linear_axis, panel(runs, 5));
}

}  // namespace

double metrics_number(const nlohmann::json& j, const char* name, const std::string& where) {
  if (!j.contains(name)) throw Error(fmt::format("{}: no \"{}\" field", where, name));
  const nlohmann::json& v = j.at(name);
  if (v.is_null()) return kNaN;
  if (!v.is_number()) throw Error(fmt::format("{}: \"{}\" is not a number: {}", where, name, v.dump()));
  return v.get<double>();
}

std::string run_label(const std::filesystem::path& dir) {
  std::filesystem::path p = std::filesystem::absolute(dir).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  return p.filename().empty() ? p.string() : p.filename().string();
}

bool read_json_lines(const std::filesystem::path& path,
                     const std::function<void(const nlohmann::json&, const std::string&)>& record) {
  if (!std::filesystem::exists(path)) throw Error(fmt::format("{}: no such file", path.string()));
  const std::string text = read_file(path);
  std::size_t line_number = 0;
  for (std::size_t at = 0; at < text.size();) {
    std::size_t end = text.find('\n', at);
    const bool terminated = end != std::string::npos;
    if (!terminated) end = text.size();
    const std::string line = text.substr(at, end - at);
    at = end + 1;
    ++line_number;
    const std::string where = fmt::format("{} line {}", path.string(), line_number);
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception&) {
      if (!terminated) return true;
      throw Error(fmt::format("{}: not JSON: {}", where, line.size() > 80 ? line.substr(0, 80) + "..." : line));
    }
    record(j, where);
  }
  return false;
}

MetricsFile read_metrics(const std::filesystem::path& path) {
  MetricsFile out;
  out.torn_last_line = read_json_lines(path, [&](const nlohmann::json& j, const std::string& where) {
    // Records of another kind ("kind": "diagnostics", docs/diagnostics.md) are not steps.
    if (j.is_object() && j.contains("kind")) return;
    MetricsRow row = parse_row(j, where);
    // A resumed run truncates the steps after its checkpoint before appending, so steps only grow.
    if (!out.rows.empty() && row.step <= out.rows.back().step) {
      throw Error(fmt::format("{}: step {} does not follow step {}", where, row.step, out.rows.back().step));
    }
    out.rows.push_back(row);
  });
  if (out.rows.empty()) throw Error(fmt::format("{} holds no steps", path.string()));
  return out;
}

std::filesystem::path default_plot_path(const std::filesystem::path& run_dir) { return run_dir / "training.png"; }

std::filesystem::path script_path(const std::filesystem::path& png) {
  std::filesystem::path s = png;
  return s.replace_extension(".gnuplot");
}

void plot_runs(const std::vector<std::filesystem::path>& run_dirs, const std::filesystem::path& png) {
  std::vector<Run> runs;
  std::map<std::string, int> label_count;
  for (const std::filesystem::path& dir : run_dirs) {
    if (!std::filesystem::is_directory(dir)) {
      throw Error(fmt::format("{}: {}", dir.string(), std::filesystem::exists(dir) ? "not a folder" : "no such folder"));
    }
    const std::filesystem::path metrics = dir / "metrics.jsonl";
    if (!std::filesystem::exists(metrics)) {
      throw Error(fmt::format("{} holds no metrics.jsonl (is it the --out folder of quartet train?)", dir.string()));
    }
    MetricsFile m = read_metrics(metrics);
    if (m.torn_last_line) {
      fmt::print(stderr, "note: {}: the last line is incomplete (a run still writing, or killed); left out\n",
                 metrics.string());
    }
    runs.push_back({run_label(dir), std::move(m.rows)});
    ++label_count[runs.back().label];
  }
  // Two runs named alike (a/run, b/run) would share one legend entry: label them by their paths.
  for (std::size_t k = 0; k < runs.size(); ++k) {
    if (label_count[runs[k].label] > 1) runs[k].label = run_dirs[k].string();
  }
  const std::filesystem::path folder = png.parent_path();
  const std::string name = png.filename().string();
  const std::filesystem::path script_file = script_path(png);
  write_file_atomic(script_file, script(runs, name));
  run_gnuplot(folder, script_file.filename().string());
}

void plot_finished_run(const std::filesystem::path& run_dir, std::FILE* report) {
  if (!gnuplot_available()) {
    fmt::print(stderr, "note: {}; no training.png drawn (--no-plot skips this)\n", kGnuplotMissing);
    return;
  }
  const std::filesystem::path png = default_plot_path(run_dir);
  try {
    plot_runs({run_dir}, png);
    fmt::print(report, "plot: {}\n", png.string());
  } catch (const Error& e) {
    fmt::print(stderr, "note: could not draw {}: {}\n", png.string(), e.what());
  }
}

}  // namespace quartet::cli

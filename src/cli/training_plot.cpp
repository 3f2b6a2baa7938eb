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

// A number field, or NaN for null (a non-finite value, as the JSON library writes it).
double number_field(const nlohmann::json& j, const char* name, const std::string& where) {
  if (!j.contains(name)) throw Error(fmt::format("{}: no \"{}\" field", where, name));
  const nlohmann::json& v = j.at(name);
  if (v.is_null()) return kNaN;
  if (!v.is_number()) throw Error(fmt::format("{}: \"{}\" is not a number: {}", where, name, v.dump()));
  return v.get<double>();
}

MetricsRow parse_row(const nlohmann::json& j, const std::string& where) {
  if (!j.is_object()) throw Error(fmt::format("{}: not a JSON object", where));
  MetricsRow r;
  if (!j.contains("step") || !j.at("step").is_number_integer()) {
    throw Error(fmt::format("{}: no integer \"step\" field", where));
  }
  r.step = j.at("step").get<std::int64_t>();
  r.loss = number_field(j, "loss", where);
  r.lr = number_field(j, "lr", where);
  r.grad_norm = number_field(j, "grad_norm", where);
  r.tokens_per_s = number_field(j, "tokens_per_s", where);
  if (j.contains("val_loss")) r.val_loss = number_field(j, "val_loss", where);
  return r;
}

// "run" for "/x/run", "/x/run/" and (run from inside it) ".".
std::string run_label(const std::filesystem::path& dir) {
  std::filesystem::path p = std::filesystem::absolute(dir).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  return p.filename().empty() ? p.string() : p.filename().string();
}

// Text for a gnuplot comment: a line break in a folder name would end the comment and make the
// rest of the name a command, so control characters become spaces.
std::string comment_text(std::string text) {
  for (char& c : text) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = ' ';
  }
  return text;
}

// gnuplot reads "NaN" as an undefined value: the curve has a gap there.
std::string num(double v) { return std::isfinite(v) ? fmt::format("{}", v) : "NaN"; }

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
                     comment_text(runs[k].label), k + 1);
    for (const MetricsRow& r : runs[k].rows) {
      s += fmt::format("{} {} {} {} {}\n", r.step, num(r.loss), num(r.lr), num(r.grad_norm), num(r.tokens_per_s));
    }
    s += fmt::format("EOD\n$val{} << EOD\n# step val_loss\n", k + 1);
    for (const MetricsRow& r : runs[k].rows) {
      if (r.val_loss) s += fmt::format("{} {}\n", r.step, num(*r.val_loss));
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

// Tics for a log axis over [lo, hi]. gnuplot labels only whole decades, and a loss falling from
// 5.6 to 2.5 spans none: so the ticks are listed, as finely as leaves about a dozen of them.
std::string log_tics(double lo, double hi) {
  if (!(lo > 0) || !(hi >= lo) || !std::isfinite(hi)) return "set ytics autofreq\n";
  const std::vector<std::vector<double>> mantissas = {{1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8}, {1, 2, 5}, {1}};
  std::vector<double> tics;
  for (const auto& m : mantissas) {
    tics.clear();
    for (int e = static_cast<int>(std::floor(std::log10(lo))); e <= static_cast<int>(std::ceil(std::log10(hi))); ++e) {
      for (double d : m) {
        const double t = d * std::pow(10.0, e);
        if (t >= lo && t <= hi) tics.push_back(t);
      }
    }
    if (tics.size() <= 12) break;
  }
  // Fewer than two tics in range (a flat curve): the nearest below and above label the axis.
  if (tics.size() < 2) return "set ytics autofreq\nset autoscale y\n";
  std::string list;
  for (double t : tics) list += fmt::format("{}{:g}", list.empty() ? "" : ", ", t);
  return fmt::format("set ytics ({})\n", list);
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
  const std::string log_axis = "set logscale y\nset autoscale yfix\nset offsets 0, 0, graph 0.05, graph 0.05\n";
  const std::string linear_axis = "unset logscale y\nset autoscale y\nset offsets 0, 0, 0, 0\nset ytics autofreq\n";
  return fmt::format(
      "# Drawn by `quartet plot`; `gnuplot {}` redraws {} from the data below.\n{}"
      "set terminal pngcairo noenhanced size 1400,900 font ',10'\n"
      "set output {}\n"
      "set linetype 1 lc rgb '#0072B2'\nset linetype 2 lc rgb '#D55E00'\nset linetype 3 lc rgb '#009E73'\n"
      "set linetype 4 lc rgb '#CC79A7'\nset linetype 5 lc rgb '#E69F00'\nset linetype 6 lc rgb '#56B4E9'\n"
      "set linetype 7 lc rgb '#000000'\nset linetype 8 lc rgb '#F0E442'\nset linetype cycle 8\n"
      "set multiplot layout 2,2 title {}\n"
      "set grid\nset xlabel 'step'\nset key top right\n"
      "set title 'loss (log scale; dashed with points: validation)'\nset ylabel 'loss (nats per token)'\n{}{}{}"
      "set title 'learning rate'\nset ylabel 'learning rate'\n{}{}"
      "set title 'gradient norm (log scale, before clipping)'\nset ylabel 'gradient norm'\n{}{}{}"
      "set title 'throughput'\nset ylabel 'tokens per second'\n{}set yrange [0:*]\n{}"
      "unset multiplot\n",
      comment_text(script_path(png_name).string()), comment_text(png_name), datablocks(runs), gnuplot_quoted(png_name),
      gnuplot_quoted("quartet: " + labels), log_axis, log_tics(loss_lo, loss_hi), loss_panel(runs), linear_axis,
      panel(runs, 3), log_axis, log_tics(norm_lo, norm_hi), panel(runs, 4), linear_axis, panel(runs, 5));
}

}  // namespace

MetricsFile read_metrics(const std::filesystem::path& path) {
  if (!std::filesystem::exists(path)) throw Error(fmt::format("{}: no such file", path.string()));
  const std::string text = read_file(path);
  MetricsFile out;
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
      if (!terminated) {
        out.torn_last_line = true;
        break;
      }
      throw Error(fmt::format("{}: not JSON: {}", where, line.size() > 80 ? line.substr(0, 80) + "..." : line));
    }
    MetricsRow row = parse_row(j, where);
    // A resumed run truncates the steps after its checkpoint before appending, so steps only grow.
    if (!out.rows.empty() && row.step <= out.rows.back().step) {
      throw Error(fmt::format("{}: step {} does not follow step {}", where, row.step, out.rows.back().step));
    }
    out.rows.push_back(row);
  }
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

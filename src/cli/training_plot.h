// The training plot of `quartet plot` and of `quartet train --out`: loss (train and validation),
// learning rate, gradient norm and tokens/s of one or more run folders, read from their
// metrics.jsonl, drawn by gnuplot into one PNG (2x2 panels, one colour per run).
#pragma once

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace quartet::cli {

// One line of metrics.jsonl (src/train/trainer.cpp, StepMetrics::to_json). A non-finite value
// is written by the JSON library as null; it is read as NaN (gnuplot leaves a gap there).
struct MetricsRow {
  std::int64_t step = 0;
  double loss = 0, lr = 0, grad_norm = 0, tokens_per_s = 0;
  std::optional<double> val_loss;
};

struct MetricsFile {
  std::vector<MetricsRow> rows;
  // Set when the last line was cut short (no line break, not JSON): the trainer writes each line
  // in one write(2), so this is a run still writing it or one killed mid-write; it is left out.
  bool torn_last_line = false;
};

// Calls `record` with each JSON value of the JSON-lines file `path` and where it is ("PATH line
// N"), skipping blank lines. Returns true when the last line was cut short (left out, as
// MetricsFile::torn_last_line says). Throws Error naming the file and line if it is missing or
// another line is not JSON.
bool read_json_lines(const std::filesystem::path& path,
                     const std::function<void(const nlohmann::json&, const std::string&)>& record);

// Reads the step lines of `path`; lines of another kind (an object with a "kind" field, such as
// the diagnostics records) are skipped. Throws Error naming the file (and the line) if it is
// missing, empty, not JSON lines, lacks a field, or its steps do not increase.
MetricsFile read_metrics(const std::filesystem::path& path);

// Field `name` of a metrics.jsonl object as a number, NaN for null (a non-finite value, as the
// JSON library writes it). Throws Error "WHERE: no "NAME" field" or "... is not a number".
double metrics_number(const nlohmann::json& j, const char* name, const std::string& where);

// A run's name in legends and titles: "run" for "/x/run", "/x/run/" and (run from inside it) ".".
std::string run_label(const std::filesystem::path& dir);

// The default PNG of one run, and the gnuplot script kept beside a PNG (same name, .gnuplot).
std::filesystem::path default_plot_path(const std::filesystem::path& run_dir);
std::filesystem::path script_path(const std::filesystem::path& png);

// Reads every run's metrics.jsonl and draws them into `png`, writing the script (with the data
// inline, so it redraws the picture by itself) beside it. Existing files are replaced: both are
// derived from the metrics. Warnings (a torn last line) go to stderr. Throws Error naming the
// run, file or line on bad input, and gnuplot's output if gnuplot fails. The caller checks that
// gnuplot is installed.
void plot_runs(const std::vector<std::filesystem::path>& run_dirs, const std::filesystem::path& png);

// The end of `quartet train --out`: draws RUN/training.png. A picture is a convenience, so
// nothing here fails the run: without gnuplot, or if drawing fails, one line on stderr says so.
// `report` receives the "plot: PNG" line (stderr under `train --json`, whose stdout is the summary).
void plot_finished_run(const std::filesystem::path& run_dir, std::FILE* report = stdout);

}  // namespace quartet::cli

// `quartet plot RUN... [--out FILE.png]`: draws the loss, learning rate, gradient norm and
// throughput of one or more run folders (their metrics.jsonl) into one PNG, with gnuplot.
// `quartet plot --diagnose DIAGNOSE.json`: draws what `quartet diagnose` measured, where it ran
// without gnuplot (`--no-plot`), the picture it would have drawn.
#include <fmt/format.h>

#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/diagnose_plot.h"
#include "cli/gnuplot.h"
#include "cli/training_plot.h"
#include "quartet/error.h"
#include "quartet/train/diagnose.h"
#include "quartet/util/files.h"

namespace quartet::cli {

namespace {

struct PlotOptions {
  std::vector<std::string> runs;
  std::string diagnose;
  std::string out;
};

// diagnose.json's picture, with the subtitle `quartet diagnose` gives it.
void plot_diagnose_file(const std::filesystem::path& file, const std::filesystem::path& png) {
  if (!std::filesystem::is_regular_file(file)) throw Error(fmt::format("--diagnose {}: no such file", file.string()));
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file(file));
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("--diagnose {}: not valid JSON: {}", file.string(), e.what()));
  }
  if (!j.is_object() || !j.contains("mean")) {
    throw Error(fmt::format("--diagnose {}: no \"mean\" rows: not a diagnose.json of `quartet diagnose --out`",
                            file.string()));
  }
  const std::vector<MeanEstimator> means = estimator_means_from_json(j.at("mean"), file.string());
  std::string subtitle;
  try {
    subtitle = fmt::format("{}, step {}, {} draws", j.at("trained_recipe").get<std::string>(),
                           j.at("step").get<std::int64_t>(), j.at("draws").get<std::int64_t>());
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("{}: a field is missing or has the wrong type: {}", file.string(), e.what()));
  }
  plot_diagnose(means, subtitle, png);
}

}  // namespace

Command add_plot_command(CLI::App& parent) {
  auto o = std::make_shared<PlotOptions>();
  CLI::App* app = parent.add_subcommand(
      "plot", "Draw loss, learning rate, gradient norm and tokens/s of one or more run folders into one PNG, or "
             "what `quartet diagnose` measured (--diagnose)");
  app->add_option("RUN", o->runs, "run folders (the --out of quartet train), each holding metrics.jsonl")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  app->add_option("--diagnose", o->diagnose,
                  "instead of runs: a diagnose.json of `quartet diagnose --out` to draw (default --out: "
                  "diagnose.png beside it)")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  app->add_option("--out", o->out,
                  "the PNG to write, replaced if it exists (default for one run: RUN/training.png); "
                  "the gnuplot script goes beside it")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);

  Command command;
  command.app = app;
  command.check = [o]() {
    if (o->runs.empty() == o->diagnose.empty()) {
      throw Error(o->runs.empty() ? "say what to draw: RUN folders, or --diagnose DIAGNOSE.json"
                                  : "run folders and --diagnose draw different pictures: give one or the other");
    }
    // Several runs have no one folder the picture belongs to: the user says where it goes.
    if (o->runs.size() > 1 && o->out.empty()) {
      throw Error(fmt::format("{} runs given: say where the picture goes with --out FILE.png", o->runs.size()));
    }
    if (!o->out.empty()) {
      const std::filesystem::path out(o->out);
      // The terminal is pngcairo: another extension would name the file falsely.
      if (out.extension() != ".png") throw Error(fmt::format("--out {} must name a .png file", o->out));
      if (std::filesystem::is_directory(out)) throw Error(fmt::format("--out {} is a folder", o->out));
      const std::filesystem::path folder = out.parent_path();
      if (!folder.empty() && !std::filesystem::is_directory(folder)) {
        throw Error(fmt::format("--out {}: the folder {} does not exist", o->out, folder.string()));
      }
    }
    // The same folder twice (perhaps as run and ./run) would draw one run as two.
    for (std::size_t i = 0; i < o->runs.size(); ++i) {
      for (std::size_t j = 0; j < i; ++j) {
        std::error_code ec;  // a missing folder is not "the same": plot_runs reports it
        if (std::filesystem::equivalent(o->runs[i], o->runs[j], ec)) {
          throw Error(fmt::format("the run folder {} is given twice (as {} and {})", o->runs[i], o->runs[j], o->runs[i]));
        }
      }
    }
  };
  command.run = [o]() {
    if (!gnuplot_available()) throw Error(kGnuplotMissing);
    if (!o->diagnose.empty()) {
      const std::filesystem::path file(o->diagnose);
      const std::filesystem::path png = o->out.empty() ? file.parent_path() / "diagnose.png" : std::filesystem::path(o->out);
      plot_diagnose_file(file, png);
      fmt::print("wrote {} (script: {})\n", png.string(), script_path(png).string());
      return 0;
    }
    const std::filesystem::path png = o->out.empty() ? default_plot_path(o->runs.front()) : std::filesystem::path(o->out);
    plot_runs({o->runs.begin(), o->runs.end()}, png);
    fmt::print("wrote {} (script: {})\n", png.string(), script_path(png).string());
    return 0;
  };
  return command;
}

}  // namespace quartet::cli

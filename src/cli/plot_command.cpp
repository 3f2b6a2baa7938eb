// `quartet plot RUN... [--out FILE.png]`: draws the loss, learning rate, gradient norm and
// throughput of one or more run folders (their metrics.jsonl) into one PNG, with gnuplot.
#include <fmt/format.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/gnuplot.h"
#include "cli/training_plot.h"
#include "quartet/error.h"

namespace quartet::cli {

namespace {

struct PlotOptions {
  std::vector<std::string> runs;
  std::string out;
};

}  // namespace

Command add_plot_command(CLI::App& parent) {
  auto o = std::make_shared<PlotOptions>();
  CLI::App* app = parent.add_subcommand(
      "plot", "Draw loss, learning rate, gradient norm and tokens/s of one or more run folders into one PNG");
  app->add_option("RUN", o->runs, "run folders (the --out of quartet train), each holding metrics.jsonl")
      ->required()
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  app->add_option("--out", o->out,
                  "the PNG to write, replaced if it exists (default for one run: RUN/training.png); "
                  "the gnuplot script goes beside it")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);

  Command command;
  command.app = app;
  command.check = [o]() {
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
    const std::filesystem::path png = o->out.empty() ? default_plot_path(o->runs.front()) : std::filesystem::path(o->out);
    plot_runs({o->runs.begin(), o->runs.end()}, png);
    fmt::print("wrote {} (script: {})\n", png.string(), script_path(png).string());
    return 0;
  };
  return command;
}

}  // namespace quartet::cli

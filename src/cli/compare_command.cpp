// `quartet compare`: train the same model on the same data with the same seed under several
// recipes, then print a table of final losses and gaps to bf16 and draw the loss curves
// (gnuplot, PNG).
#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli/commands.h"
#include "cli/compare_gather.h"
#include "cli/config_file.h"
#include "cli/gnuplot.h"
#include "cli/progress.h"
#include "cli/train_options.h"
#include "quartet/error.h"
#include "quartet/train/initial_weights.h"
#include "quartet/util/files.h"
#include "quartet/util/text.h"

namespace quartet::cli {

namespace {

struct CompareOptions {
  TrainOptions train;
  std::string config_file;
  std::string recipes = "bf16,nvidia,tetrajet2,quartet2";
  std::string out = "compare";
  bool no_plot = false;
  bool quiet = false;
  bool force = false;
  std::vector<std::string> from;  // gather finished runs instead of training
};

std::string folder_name(const std::string& recipe) {
  std::string s = recipe;
  for (char& c : s) {
    if (c == '/' || c == '+') c = '_';
  }
  return s;
}

struct RecipeRun {
  std::string recipe;
  TrainResult result;
};

// Exponential moving average of the training loss, so the curves are readable.
std::vector<double> smoothed_losses(const TrainResult& r) {
  std::vector<double> out;
  double ema = 0;
  for (std::size_t i = 0; i < r.history.size(); ++i) {
    ema = i == 0 ? r.history[i].loss : 0.9 * ema + 0.1 * r.history[i].loss;
    out.push_back(ema);
  }
  return out;
}

void plot(const std::filesystem::path& dir, const std::vector<RecipeRun>& runs, const TrainConfig& c) {
  std::string curves_all, curves_zoom;
  double lo = 1e30, hi = -1e30;
  for (std::size_t k = 0; k < runs.size(); ++k) {
    const auto& r = runs[k].result;
    const std::vector<double> ema = smoothed_losses(r);
    std::ostringstream train_dat, val_dat;
    for (std::size_t i = 0; i < r.history.size(); ++i) {
      train_dat << r.history[i].step << " " << r.history[i].loss << " " << ema[i] << "\n";
      if (r.history[i].val_loss) val_dat << r.history[i].step << " " << *r.history[i].val_loss << "\n";
      if (i >= r.history.size() / 2) {  // the zoomed panel shows the second half, train and val
        lo = std::min({lo, ema[i], r.history[i].val_loss.value_or(ema[i])});
        hi = std::max({hi, ema[i], r.history[i].val_loss.value_or(ema[i])});
      }
    }
    const std::string name = folder_name(runs[k].recipe);
    write_file_atomic(dir / (name + ".train.dat"), train_dat.str());
    write_file_atomic(dir / (name + ".val.dat"), val_dat.str());
    const std::string sep = k == 0 ? "" : ", \\\n  ";
    const std::string lines = fmt::format(
        "{}{} using 1:3 with lines lw 2 lc {} title {}, {} using 1:2 with linespoints pt 7 ps 0.8 dt 2 lc {} title {}",
        sep, gnuplot_quoted(name + ".train.dat"), k + 1, gnuplot_quoted(runs[k].recipe + " (train, EMA)"),
        gnuplot_quoted(name + ".val.dat"), k + 1, gnuplot_quoted(runs[k].recipe + " (val)"));
    curves_all += lines;
    curves_zoom += lines;
  }
  const double pad = 0.1 * (hi - lo) + 1e-3;
  const std::string script = fmt::format(
      "set terminal pngcairo size 1400,600 font ',10'\n"
      "set output 'loss.png'\n"
      "set multiplot layout 1,2 title {}\n"
      "set grid\nset xlabel 'step'\nset ylabel 'loss (nats per token)'\nset key top right\n"
      "set title 'whole run'\nplot {}\n"
      "set title 'second half (zoomed)'\nset xrange [{}:*]\nset yrange [{}:{}]\nplot {}\n"
      "unset multiplot\n",
      gnuplot_quoted(fmt::format("quartet compare: model {}, {} steps of {} tokens, seed {}, data {}", c.model_size,
                                 c.steps, c.tokens_per_step(), c.seed, c.data)),
      curves_all, c.steps / 2, lo - pad, hi + pad, curves_zoom);
  write_file_atomic(dir / "loss.gnuplot", script);
  run_gnuplot(dir, "loss.gnuplot");
}

}  // namespace

Command add_compare_command(CLI::App& parent) {
  auto o = std::make_shared<CompareOptions>();
  CLI::App* app = parent.add_subcommand(
      "compare", "Train under several recipes with the same seed and data; print a table and plot the loss curves");
  app->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  add_config_option(*app, o->config_file);
  app->add_option("--recipes", o->recipes, "comma-separated recipes")->capture_default_str();
  add_train_options(*app, o->train);
  app->add_option("--out", o->out, "folder for the runs, compare.json and loss.png")->capture_default_str();
  app->add_flag("--no-plot", o->no_plot, "do not draw loss.png (no gnuplot needed)");
  app->add_flag("--force", o->force, "replace the comparison already in --out (its runs, compare.json, loss.png)");
  app->add_flag("--quiet", o->quiet, "no progress line");
  app->add_option("--from", o->from,
                  "finished run folders (made by `quartet train --out`, several seeds each) to compare instead of "
                  "training: the table, compare.json and loss.png from their run.json and metrics.jsonl")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)
      ->expected(1, -1);

  Command command;
  command.app = app;
  // Everything is validated before the first (long) run starts.
  auto checked_recipes = std::make_shared<std::vector<std::string>>();
  auto checked_configs = std::make_shared<std::vector<TrainConfig>>();
  command.check = [o, app, recipes = checked_recipes, configs = checked_configs]() {
    if (!o->from.empty()) {
      // The runs were trained already: an option that would change training has no effect, and
      // is refused rather than ignored.
      for (const CLI::Option* opt : app->get_options()) {
        const std::string name = opt->get_name();
        if (opt->count() > 0 && name != "--from" && name != "--out" && name != "--no-plot" && name != "--force" &&
            name != "--help" && name != "--quiet") {
          throw Error(fmt::format("{} has no effect with --from (those runs were trained already)", name));
        }
      }
      if (!o->config_file.empty()) throw Error("--config has no effect with --from (those runs were trained already)");
      return;
    }
    // getline yields no last entry after a trailing comma: check for it (and for nothing at all).
    if (o->recipes.empty() || o->recipes.back() == ',') {
      throw Error(fmt::format("--recipes '{}' has an empty entry", o->recipes));
    }
    std::stringstream ss(o->recipes);
    for (std::string r; std::getline(ss, r, ',');) {
      if (r.empty()) throw Error(fmt::format("--recipes '{}' has an empty entry", o->recipes));
      // Two runs of one recipe would share (and overwrite) one run folder and one table row.
      for (const std::string& earlier : *recipes) {
        if (folder_name(earlier) == folder_name(r)) {
          throw Error(fmt::format("--recipes '{}' lists {} twice{}", o->recipes, r,
                                  earlier == r ? "" : fmt::format(" (as {} and {}: the same run folder)", earlier, r)));
        }
      }
      recipes->push_back(r);
    }
    for (const std::string& r : *recipes) {
      TrainOptions t = o->train;
      t.config.recipe = r;
      t.config.out_dir = (std::filesystem::path(o->out) / folder_name(r)).string();
      configs->push_back(t.resolve());
    }
    // Every run folder is checked before the first (long) run starts: an earlier comparison is
    // never overwritten without --force.
    RunControl control;
    control.replace_existing_run = o->force;
    const std::filesystem::path out(o->out);
    if (std::filesystem::exists(out) && !std::filesystem::is_directory(out)) {
      throw Error(fmt::format("--out {} exists and is not a folder", o->out));
    }
    if (!o->force && std::filesystem::exists(out / "compare.json")) {
      throw Error(fmt::format("--out {} already holds a comparison (compare.json); use --force to replace it", o->out));
    }
    for (const TrainConfig& c : *configs) check_run_folder(c.out_dir, control);
  };
  command.run = [o, recipes_ptr = checked_recipes, configs_ptr = checked_configs]() {
    if (!o->from.empty()) return run_compare_gather(o->from, o->out, o->no_plot, o->force);
    const std::vector<std::string>& recipes = *recipes_ptr;
    std::vector<TrainConfig> configs = *configs_ptr;
    // One checkpoint for every recipe, resolved once: a run folder's latest may move meanwhile.
    if (!configs.front().init_from.empty()) {
      const std::string from = resolve_initial_checkpoint(configs.front().init_from, o->out).string();
      for (TrainConfig& c : configs) c.init_from = from;
    }
    RunControl control;
    control.replace_existing_run = o->force;
    control.commit = QUARTET_GIT_COMMIT;  // into each run's metrics.jsonl (src/CMakeLists.txt defines it)
    if (!o->no_plot && !gnuplot_available()) {
      throw Error(std::string(kGnuplotMissing) + "; install it or pass --no-plot");
    }
    std::filesystem::create_directories(o->out);

    std::vector<RecipeRun> runs;
    for (std::size_t i = 0; i < configs.size(); ++i) {
      fmt::print(stderr, "[{}/{}] recipe {}\n", i + 1, configs.size(), recipes[i]);
      ProgressLine progress("  " + recipes[i]);
      progress.set_silent(o->quiet);
      TrainCallbacks cb;
      cb.on_step = [&](const StepMetrics& m) {
        progress.update(m.step, configs[i].steps, step_summary(m), m.val_loss.has_value());
      };
      runs.push_back({recipes[i], train(configs[i], cb, control)});
      progress.finish();
    }

    const RecipeRun* bf16 = nullptr;
    for (const auto& r : runs) {
      if (r.recipe == "bf16") bf16 = &r;
    }
    nlohmann::json table = nlohmann::json::array();
    fmt::print("\n{:<14} {:>12} {:>10} {:>10} {:>12} {:>10}\n", "recipe", "train loss", "val loss", "val bpb",
               "gap to bf16", "tok/s");
    for (const auto& r : runs) {
      const auto& h = r.result.history;
      double train_tail = 0, tps = 0;
      const std::size_t from = h.size() - std::max<std::size_t>(1, h.size() / 10);
      for (std::size_t i = from; i < h.size(); ++i) train_tail += h[i].loss / static_cast<double>(h.size() - from);
      for (const auto& m : h) tps += m.tokens_per_second / static_cast<double>(h.size());
      const std::string gap = bf16 ? fmt::format("{:+.4f}", r.result.final_val_loss - bf16->result.final_val_loss) : "-";
      fmt::print("{:<14} {:>12.4f} {:>10.4f} {:>10.4f} {:>12} {:>10.0f}\n", r.recipe, train_tail, r.result.final_val_loss,
                 r.result.final_val_bpb, gap, tps);
      nlohmann::json row = {{"recipe", r.recipe},
                            {"train_loss_last_10pct", train_tail},
                            {"val_loss", r.result.final_val_loss},
                            {"val_bpb", r.result.final_val_bpb},
                            {"tokens_per_s", tps},
                            {"skipped_steps", r.result.skipped_steps},
                            {"seconds", r.result.seconds}};
      if (bf16) row["gap_to_bf16"] = r.result.final_val_loss - bf16->result.final_val_loss;
      table.push_back(row);
    }
    const nlohmann::json report = {{"config", configs.front().to_json()}, {"results", table}};
    write_file_atomic(std::filesystem::path(o->out) / "compare.json", report.dump(2) + "\n");
    fmt::print("\n(train loss: mean of the last 10% of steps; val loss and bits per byte: final evaluation)\n");
    fmt::print("{}\n", validation_note(configs.front().eval_batches, configs.front().final_eval_batches));
    fmt::print("wrote {}/compare.json", o->out);
    if (!o->no_plot) {
      plot(o->out, runs, configs.front());
      fmt::print(" and {}/loss.png", o->out);
    }
    fmt::print("\n");
    return 0;
  };
  return command;
}

}  // namespace quartet::cli

#include "cli/compare_gather.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <set>
#include <tuple>
#include <utility>

#include "cli/gnuplot.h"
#include "cli/training_plot.h"
#include "quartet/error.h"
#include "quartet/util/files.h"
#include "quartet/util/json_number.h"

namespace quartet::cli {

namespace {

// Keys that may differ between runs of one comparison: what is compared (the recipe and its
// options), the seed, and how the run was executed or observed.
const std::set<std::string> kVaryingKeys = {"recipe",       "recipe_options", "seed",      "device",
                                            "eval_every",   "eval_batches",   "save_every"};

std::string value_text(const nlohmann::json& j) { return j.is_null() ? "(unset)" : j.dump(); }

double mean_of(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return s / static_cast<double>(v.size());
}

double sd_of(const std::vector<double>& v) {
  if (v.size() < 2) return 0;
  const double m = mean_of(v);
  double s = 0;
  for (double x : v) s += (x - m) * (x - m);
  return std::sqrt(s / static_cast<double>(v.size() - 1));
}

nlohmann::json parse_json_file(const std::filesystem::path& file) {
  try {
    return nlohmann::json::parse(read_file(file));
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("{}: not valid JSON: {}", file.string(), e.what()));
  }
}

// RUN/eval-bf16.json's loss (`quartet eval --recipe bf16 --json` of the run's final model), if
// the file is there; it must be that evaluation, of the run's last step, on the windows of the
// run's final evaluation (the same tokens as run.json's val_loss).
std::optional<double> read_bf16_forward_loss(const std::filesystem::path& dir, std::int64_t steps,
                                             const nlohmann::json& config) {
  const std::filesystem::path file = dir / "eval-bf16.json";
  if (!std::filesystem::exists(file)) return std::nullopt;
  const nlohmann::json j = parse_json_file(file);
  try {
    if (j.at("recipe").get<std::string>() != "bf16") {
      throw Error(fmt::format("{}: an evaluation with recipe {}, not bf16", file.string(), j.at("recipe").dump()));
    }
    const std::int64_t step = j.at("step").get<std::int64_t>(), batches = j.at("batches").get<std::int64_t>(),
                       batch = j.at("batch").get<std::int64_t>(), seq = j.at("seq").get<std::int64_t>();
    // Runs older than --final-eval-batches evaluated at the end on eval_batches windows.
    const std::int64_t final_batches = config.value("final_eval_batches", config.at("eval_batches")).get<std::int64_t>(),
                       run_batch = config.at("batch").get<std::int64_t>(), run_seq = config.at("seq").get<std::int64_t>();
    if (step != steps || batch != run_batch || seq != run_seq || batches != final_batches) {
      throw Error(fmt::format("{}: it evaluated step {} on {} windows of {} x {}; the run's final evaluation is step {} "
                              "on {} windows of {} x {}",
                              file.string(), step, batches, batch, seq, steps, final_batches, run_batch, run_seq));
    }
    if (j.at("data") != config.at("data")) {
      throw Error(fmt::format("{}: it evaluated data {}; the run trained on {}", file.string(), j.at("data").dump(),
                              config.at("data").dump()));
    }
    if (j.at("loss").is_null()) return std::numeric_limits<double>::quiet_NaN();  // a model diverged in BF16
    return j.at("loss").get<double>();
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("{}: a field is missing or has the wrong type: {}", file.string(), e.what()));
  }
}

}  // namespace

std::string run_label(const nlohmann::json& config) {
  std::string label = config.at("recipe").get<std::string>();
  const nlohmann::json options = config.value("recipe_options", nlohmann::json::object());
  bool custom = false;
  for (const auto& [key, value] : options.items()) {
    if (key == "quantize_forward") {
      if (!value.get<bool>()) label += "-bwdonly";
    } else if (key == "quantize_backward") {
      if (!value.get<bool>()) label += "-fwdonly";
    } else if (key == "four_over_six") {
      label += value.get<bool>() ? "-46" : "-no46";
    } else if (key == "backward_rotation") {
      label += fmt::format("-rot{}", value.get<int>());
    } else if (key == "eden_group") {
      label += fmt::format("-g{}", value.get<int>());
    } else {
      custom = true;
    }
  }
  return custom ? label + "-custom" : label;
}

GatheredRun read_gathered_run(const std::filesystem::path& dir) {
  const std::filesystem::path file = dir / "run.json";
  if (!std::filesystem::exists(file)) {
    throw Error(fmt::format("{}: no run.json: not a finished run of `quartet train --out` (it writes run.json at "
                            "the end)",
                            dir.string()));
  }
  const nlohmann::json j = parse_json_file(file);
  try {
    GatheredRun r;
    r.dir = dir;
    r.config = j.at("config");
    r.label = run_label(r.config);
    r.seed = r.config.at("seed").get<std::uint64_t>();
    const std::int64_t steps = j.at("steps").get<std::int64_t>(), total = j.at("total_steps").get<std::int64_t>();
    if (steps != total) {
      throw Error(fmt::format("{}: the run stopped at step {} of {}: resume it to the end first", dir.string(), steps,
                              total));
    }
    const bool evaluated_at_the_end = j.at("val_step").get<std::int64_t>() == steps;
    if (evaluated_at_the_end && j.at("val_loss").is_null()) {
      // `quartet train` keeps a diverged run's record with its non-finite loss written as null.
      throw Error(fmt::format("{}: the run diverged (its final validation loss is not finite): a mean over seeds "
                              "cannot take it; report it apart and leave it out of --from",
                              dir.string()));
    }
    if (!evaluated_at_the_end) {
      throw Error(fmt::format("{}: the run has no validation loss at its last step", dir.string()));
    }
    r.val_loss = j.at("val_loss").get<double>();
    r.bf16_forward_loss = read_bf16_forward_loss(dir, steps, r.config);
    return r;
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("{}: a field is missing or has the wrong type: {}", file.string(), e.what()));
  }
}

void check_comparable(const std::vector<GatheredRun>& runs) {
  std::set<std::pair<std::string, std::uint64_t>> seen;
  for (const GatheredRun& r : runs) {
    if (!seen.insert({r.label, r.seed}).second) {
      throw Error(fmt::format("{}: a second {} run with seed {}: each recipe and seed once", r.dir.string(), r.label,
                              r.seed));
    }
  }
  const GatheredRun& first = runs.front();
  for (const GatheredRun& r : runs) {
    std::set<std::string> keys;
    for (const auto& [k, v] : first.config.items()) keys.insert(k);
    for (const auto& [k, v] : r.config.items()) keys.insert(k);
    for (const std::string& k : keys) {
      if (kVaryingKeys.count(k)) continue;
      const nlohmann::json a = first.config.value(k, nlohmann::json()), b = r.config.value(k, nlohmann::json());
      if (a != b) {
        throw Error(fmt::format("{} and {} were not trained alike: {} is {} in one and {} in the other",
                                first.dir.string(), r.dir.string(), k, value_text(a), value_text(b)));
      }
    }
  }
}

namespace {

// Each run's gap to bf16's run of the same seed, in percent, by label and seed; labels without
// bf16 runs are left out.
std::map<std::string, std::map<std::uint64_t, double>> gaps_by_seed(const std::vector<GatheredRun>& runs) {
  std::map<std::uint64_t, double> bf16;
  for (const GatheredRun& r : runs) {
    if (r.label == "bf16") bf16[r.seed] = r.val_loss;
  }
  std::map<std::string, std::map<std::uint64_t, double>> out;
  for (const GatheredRun& r : runs) {
    const auto b = bf16.find(r.seed);
    if (r.label != "bf16" && b != bf16.end()) out[r.label][r.seed] = 100.0 * (r.val_loss - b->second) / b->second;
  }
  return out;
}

// The mean of `values` and its standard error (none for one value); `values` is not empty.
std::pair<double, std::optional<double>> mean_and_se(const std::vector<double>& values) {
  std::optional<double> se;
  if (values.size() >= 2) se = sd_of(values) / std::sqrt(static_cast<double>(values.size()));
  return {mean_of(values), se};
}

}  // namespace

std::vector<RecipeSummary> summarize(const std::vector<GatheredRun>& runs) {
  std::vector<std::string> order;
  std::map<std::string, std::vector<const GatheredRun*>> by_label;
  for (const GatheredRun& r : runs) {
    if (!by_label.count(r.label)) order.push_back(r.label);
    by_label[r.label].push_back(&r);
  }
  std::stable_partition(order.begin(), order.end(), [](const std::string& l) { return l == "bf16"; });
  std::vector<RecipeSummary> out;
  for (const std::string& label : order) {
    RecipeSummary s;
    s.label = label;
    std::vector<double> losses;
    for (const GatheredRun* r : by_label[label]) {
      s.seeds.push_back(r->seed);
      losses.push_back(r->val_loss);
    }
    s.mean = mean_of(losses);
    if (losses.size() >= 2) s.sd = sd_of(losses);
    std::vector<double> bf16_forward;
    for (const GatheredRun* r : by_label[label]) {
      if (r->bf16_forward_loss) bf16_forward.push_back(*r->bf16_forward_loss);
    }
    if (bf16_forward.size() == by_label[label].size()) s.bf16_forward_mean = mean_of(bf16_forward);
    out.push_back(s);
  }
  if (!out.empty() && out.front().label == "bf16") {
    const RecipeSummary& bf16 = out.front();
    for (RecipeSummary& s : out) {
      s.gap_pct = 100.0 * (s.mean - bf16.mean) / bf16.mean;
      if (s.sd && bf16.sd) {
        const double se = *s.sd / std::sqrt(static_cast<double>(s.seeds.size()));
        const double bf16_se = *bf16.sd / std::sqrt(static_cast<double>(bf16.seeds.size()));
        s.gap_se_pct = 100.0 * std::sqrt(se * se + bf16_se * bf16_se) / bf16.mean;
      }
      if (s.bf16_forward_mean) s.bf16_forward_gap_pct = 100.0 * (*s.bf16_forward_mean - bf16.mean) / bf16.mean;
    }
  }
  auto paired = gaps_by_seed(runs);
  for (RecipeSummary& s : out) {
    s.gaps_by_seed = std::move(paired[s.label]);
    std::vector<double> values;
    for (const auto& [seed, gap] : s.gaps_by_seed) values.push_back(gap);
    if (!values.empty()) std::tie(s.paired_gap_pct, s.paired_gap_se_pct) = mean_and_se(values);
  }
  return out;
}

std::vector<GapDifference> gap_differences(const std::vector<RecipeSummary>& summary) {
  std::vector<GapDifference> out;
  if (summary.empty() || summary.front().label != "bf16") return out;
  const RecipeSummary& bf16 = summary.front();
  // The standard error of a recipe's mean loss; none for one run.
  const auto se_of = [](const RecipeSummary& s) -> std::optional<double> {
    if (!s.sd) return std::nullopt;
    return *s.sd / std::sqrt(static_cast<double>(s.seeds.size()));
  };
  for (std::size_t i = 1; i < summary.size(); ++i) {
    for (std::size_t j = i + 1; j < summary.size(); ++j) {
      const RecipeSummary &a = summary[i], &b = summary[j];
      GapDifference d;
      d.recipe = b.label;
      d.minus = a.label;
      d.difference = *b.gap_pct - *a.gap_pct;
      const std::optional<double> se_a = se_of(a), se_b = se_of(b), se_0 = se_of(bf16);
      if (se_a && se_b) d.se = 100.0 * std::hypot(*se_a, *se_b) / bf16.mean;
      const double da = a.mean - bf16.mean;
      if (da != 0) {
        const double r = (b.mean - bf16.mean) / da;
        d.ratio = r;
        if (se_a && se_b && se_0) {
          d.ratio_se = std::sqrt(*se_b * *se_b + r * r * *se_a * *se_a + (r - 1) * (r - 1) * *se_0 * *se_0) /
                       std::abs(da);
        }
      }
      std::vector<double> values;
      for (const auto& [seed, gap_b] : b.gaps_by_seed) {
        const auto ga = a.gaps_by_seed.find(seed);
        if (ga == a.gaps_by_seed.end()) continue;
        d.paired_seeds.push_back(seed);
        values.push_back(gap_b - ga->second);
      }
      if (!values.empty()) std::tie(d.paired_difference, d.paired_se) = mean_and_se(values);
      out.push_back(d);
    }
  }
  return out;
}

nlohmann::json gathered_report(const std::vector<GatheredRun>& runs, const std::vector<RecipeSummary>& summary) {
  std::optional<double> bf16_mean;
  for (const RecipeSummary& s : summary) {
    if (s.label == "bf16") bf16_mean = s.mean;
  }
  nlohmann::json config = runs.front().config;
  for (const std::string& k : kVaryingKeys) config.erase(k);
  nlohmann::json results = nlohmann::json::array(), rows = nlohmann::json::array();
  for (const GatheredRun& r : runs) {
    nlohmann::json row = {{"recipe", r.label}, {"seed", r.seed}, {"val_loss", r.val_loss}, {"run", r.dir.string()}};
    if (bf16_mean) row["gap_to_bf16"] = 100.0 * (r.val_loss - *bf16_mean) / *bf16_mean;
    if (r.bf16_forward_loss) row["bf16_forward_val_loss"] = number_or_null(*r.bf16_forward_loss);
    results.push_back(row);
  }
  for (const RecipeSummary& s : summary) {
    nlohmann::json row = {{"recipe", s.label},
                          {"seeds", s.seeds},
                          {"val_loss_mean", s.mean},
                          {"val_loss_sd", s.sd ? nlohmann::json(*s.sd) : nlohmann::json()}};
    if (s.gap_pct) {
      row["gap_to_bf16"] = *s.gap_pct;
      row["gap_to_bf16_se"] = s.gap_se_pct ? nlohmann::json(*s.gap_se_pct) : nlohmann::json();
    }
    if (s.bf16_forward_mean) row["bf16_forward_val_loss_mean"] = number_or_null(*s.bf16_forward_mean);
    if (s.bf16_forward_gap_pct) row["bf16_forward_gap_to_bf16"] = number_or_null(*s.bf16_forward_gap_pct);
    if (s.paired_gap_pct) {
      std::vector<std::uint64_t> seeds;
      for (const auto& [seed, gap] : s.gaps_by_seed) seeds.push_back(seed);
      row["paired_seeds"] = seeds;
      row["paired_gap_to_bf16"] = number_or_null(*s.paired_gap_pct);
      row["paired_gap_to_bf16_se"] = s.paired_gap_se_pct ? number_or_null(*s.paired_gap_se_pct) : nlohmann::json();
    }
    rows.push_back(row);
  }
  nlohmann::json differences = nlohmann::json::array();
  for (const GapDifference& d : gap_differences(summary)) {
    const auto optional = [](const std::optional<double>& v) { return v ? number_or_null(*v) : nlohmann::json(); };
    nlohmann::json row = {{"recipe", d.recipe},
                          {"minus", d.minus},
                          {"difference", number_or_null(d.difference)},
                          {"se", optional(d.se)},
                          {"ratio", optional(d.ratio)},
                          {"ratio_se", optional(d.ratio_se)}};
    if (d.paired_difference) {
      row["paired_seeds"] = d.paired_seeds;
      row["paired_difference"] = number_or_null(*d.paired_difference);
      row["paired_se"] = optional(d.paired_se);
    }
    differences.push_back(row);
  }
  return {{"mode", "gathered"},
          {"gap_unit", "percent of bf16's mean final validation loss"},
          {"config", config},
          {"results", results},
          {"summary", rows},
          {"gap_differences", differences}};
}

int run_compare_gather(const std::vector<std::string>& run_dirs, const std::filesystem::path& out, bool no_plot,
                       bool force) {
  if (std::filesystem::exists(out) && !std::filesystem::is_directory(out)) {
    throw Error(fmt::format("--out {} exists and is not a folder", out.string()));
  }
  if (!force && std::filesystem::exists(out / "compare.json")) {
    throw Error(fmt::format("--out {} already holds a comparison (compare.json); use --force to replace it",
                            out.string()));
  }
  if (!no_plot && !gnuplot_available()) throw Error(std::string(kGnuplotMissing) + "; install it or pass --no-plot");
  std::vector<GatheredRun> runs;
  for (const std::string& d : run_dirs) runs.push_back(read_gathered_run(d));
  check_comparable(runs);
  const std::vector<RecipeSummary> summary = summarize(runs);
  // The bf16-forward column only where some recipe has it (the campaign's runs).
  const bool bf16_forward = std::any_of(summary.begin(), summary.end(), [](const RecipeSummary& s) {
    return s.bf16_forward_gap_pct.has_value();
  });
  const bool paired = std::any_of(summary.begin(), summary.end(), [](const RecipeSummary& s) {
    return s.paired_gap_pct.has_value();
  });
  fmt::print("{:<20} {:>6} {:>22} {:>22}{}{}\n", "recipe", "seeds", "val loss (mean ± sd)", "gap to bf16 (± se)",
             paired ? fmt::format(" {:>28}", "gap seed by seed (± se)") : "",
             bf16_forward ? fmt::format(" {:>22}", "gap, bf16 forward") : "");
  for (const RecipeSummary& s : summary) {
    std::string gap = "-";
    if (s.gap_pct) {
      gap = s.gap_se_pct ? fmt::format("{:+.2f}% ± {:.2f}%", *s.gap_pct, *s.gap_se_pct)
                         : fmt::format("{:+.2f}% ± ?", *s.gap_pct);
    }
    const std::string forward =
        !bf16_forward ? "" : fmt::format(" {:>22}", s.bf16_forward_gap_pct ? fmt::format("{:+.2f}%", *s.bf16_forward_gap_pct) : "-");
    std::string by_seed;
    if (paired) {
      std::string text = "-";
      if (s.paired_gap_pct) {
        text = fmt::format("{:+.2f}% ± {} ({} seed{})", *s.paired_gap_pct,
                           s.paired_gap_se_pct ? fmt::format("{:.2f}%", *s.paired_gap_se_pct) : "?",
                           s.gaps_by_seed.size(), s.gaps_by_seed.size() == 1 ? "" : "s");
      }
      by_seed = fmt::format(" {:>28}", text);
    }
    fmt::print("{:<20} {:>6} {:>22} {:>22}{}{}\n", s.label, s.seeds.size(), s.sd ? fmt::format("{:.4f} ± {:.4f}", s.mean, *s.sd) : fmt::format("{:.4f} ± ?", s.mean),
               gap, by_seed, forward);
  }
  const std::vector<GapDifference> differences = gap_differences(summary);
  if (!differences.empty()) {
    fmt::print("\ngaps set against each other (points of percent; se from the recipes' seeds):\n");
    for (const GapDifference& d : differences) {
      std::string line = fmt::format("  {} - {}: {:+.2f}", d.recipe, d.minus, d.difference);
      if (!d.se) {
        line += " (a recipe of one run: no standard error)";
      } else {
        line += fmt::format(" ± {:.2f}", *d.se);
        if (*d.se > 0) line += fmt::format(" ({:+.1f} se)", d.difference / *d.se);
      }
      if (d.ratio) line += fmt::format("; gap ratio {:.2f}", *d.ratio);
      if (d.ratio_se) line += fmt::format(" ± {:.2f}", *d.ratio_se);
      if (d.paired_difference) {
        line += fmt::format("; seed by seed {:+.2f}", *d.paired_difference);
        if (d.paired_se) line += fmt::format(" ± {:.2f}", *d.paired_se);
        line += fmt::format(" ({} seed{})", d.paired_seeds.size(), d.paired_seeds.size() == 1 ? "" : "s");
      }
      fmt::print("{}\n", line);
    }
  }
  std::filesystem::create_directories(out);
  write_file_atomic(out / "compare.json", gathered_report(runs, summary).dump(2) + "\n");
  fmt::print("\n(final validation loss of each run; the gap's standard error combines both means' over seeds, "
             "'± ?' where a recipe has one run, which has no spread{}{})\n",
             paired ? "; gap seed by seed: each run against bf16's run of its seed (the same initialisation and data "
                      "order), averaged over the seeds both ran"
                    : "",
             bf16_forward ? "; gap, bf16 forward: the same models evaluated with a BF16 forward pass (eval-bf16.json), "
                            "against bf16's mean"
                          : "");
  fmt::print("wrote {}", (out / "compare.json").string());
  if (!no_plot) {
    std::vector<std::filesystem::path> dirs;
    for (const GatheredRun& r : runs) dirs.push_back(r.dir);
    plot_runs(dirs, out / "loss.png");
    fmt::print(" and {}", (out / "loss.png").string());
  }
  fmt::print("\n");
  return 0;
}

}  // namespace quartet::cli

// `quartet compare --from RUN...`: the comparison table, JSON and plot from finished runs made
// separately (each folder holds the run.json a finished `quartet train --out` writes, and its
// metrics.jsonl), with several seeds per recipe: a campaign that spans sessions or machines.
#pragma once

#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace quartet::cli {

struct GatheredRun {
  std::filesystem::path dir;
  std::string label;  // the recipe, with a suffix per ablation that changes it (e.g. quartet2-no46)
  std::uint64_t seed = 0;
  double val_loss = 0;
  // RUN/eval-bf16.json, where the campaign wrote it: the final model's loss on the same
  // windows with a BF16 forward pass (`quartet eval --recipe bf16`).
  std::optional<double> bf16_forward_loss;
  nlohmann::json config;
};

// Reads RUN/run.json (and RUN/eval-bf16.json if there is one). Throws Error naming the folder: no
// run.json (not a finished run), a run that stopped before its last step, or a run without a
// final validation loss; or naming eval-bf16.json when it is corrupt, not a bf16 evaluation, or
// of another step or other windows than the run's final evaluation.
GatheredRun read_gathered_run(const std::filesystem::path& dir);

// The recipe's name plus a suffix per ablation option the run set: -no46 (4/6 off), -46 (on),
// -fwdonly, -bwdonly, -rot<N>, -g<N>, and -custom for any other option.
std::string run_label(const nlohmann::json& config);

// Refuses runs that were not trained alike: every key of the configuration except the recipe,
// its options, the seed, the device and how often it evaluated or saved
// must agree; the message names the key, the two runs and their values. Two runs with the same
// label and seed are refused too.
void check_comparable(const std::vector<GatheredRun>& runs);

struct RecipeSummary {
  std::string label;
  std::vector<std::uint64_t> seeds;
  double mean = 0;  // of the final validation loss over seeds
  std::optional<double> sd;  // its standard deviation (n-1); none for one run, which has no spread
  // Gap to bf16 in percent of bf16's mean loss, and its standard error: the standard errors
  // of both means combined (seed noise on either side counts); none unless both have 2+ runs.
  std::optional<double> gap_pct, gap_se_pct;
  // Where every run of the label has its bf16-forward loss: their mean, and its gap to bf16's
  // mean loss in percent (what the 4-bit forward pass, not the training, costs is the rest).
  std::optional<double> bf16_forward_mean, bf16_forward_gap_pct;
  // The gap taken seed by seed: for each seed that both this recipe and bf16 ran (each pair
  // shares its initialisation and data order, so the seeds' own spread cancels), 100 (loss -
  // bf16's loss of that seed) / bf16's loss of that seed; their mean and its standard error (sd of
  // those gaps / sqrt(pairs); none for one pair). Empty and unset without a shared seed.
  std::map<std::uint64_t, double> gaps_by_seed;
  std::optional<double> paired_gap_pct, paired_gap_se_pct;
};

// Grouped by label in first-appearance order, bf16 first when present.
std::vector<RecipeSummary> summarize(const std::vector<GatheredRun>& runs);

// Two recipes' gaps to bf16 set against each other (the paper's claim is an ordering): `recipe`'s
// gap minus `minus`'s, in points of percent, with its standard error. The difference is
// 100 (m_b - m_a) / m_bf16: bf16's mean only scales it, so the two recipes' seed noise is what
// counts: 100 sqrt(se_a^2 + se_b^2) / m_bf16, each se = sd / sqrt(seeds). ratio: `recipe`'s gap
// over `minus`'s, R = (m_b - m_0) / (m_a - m_0), whose standard error (first order) takes bf16's
// noise too: sqrt(se_b^2 + R^2 se_a^2 + (R - 1)^2 se_0^2) / |m_a - m_0|. A recipe of one run has
// no spread to estimate: then the standard errors are unset, not 0.
struct GapDifference {
  std::string recipe, minus;
  double difference = 0;
  std::optional<double> se;
  std::optional<double> ratio;     // unset where `minus`'s gap is 0
  std::optional<double> ratio_se;  // unset with the ratio, or where a recipe (bf16 too) has one run
  // Seed by seed: over the seeds all three ran (the two recipes and bf16), the mean of `recipe`'s
  // gap minus `minus`'s, each taken against bf16's run of that seed, and its standard error (none
  // for one seed). Unset without such a seed.
  std::vector<std::uint64_t> paired_seeds;
  std::optional<double> paired_difference, paired_se;
};

// Every pair of the recipes other than bf16, in summary order (`minus` the earlier); none
// without bf16.
std::vector<GapDifference> gap_differences(const std::vector<RecipeSummary>& summary);

// The report compare.json holds: {"mode": "gathered", "gap_unit": ..., "config": (the shared
// part), "results": [one row per run: recipe, seed, val_loss, gap_to_bf16 (%), run, and
// bf16_forward_val_loss where there is one], "summary": [one per label, with
// bf16_forward_val_loss_mean and bf16_forward_gap_to_bf16 where every run has one],
// "gap_differences": [gap_differences: recipe, minus, difference, se, ratio, ratio_se; null where
// unset]}.
nlohmann::json gathered_report(const std::vector<GatheredRun>& runs, const std::vector<RecipeSummary>& summary);

// The whole command: reads, checks, prints the table, writes OUT/compare.json and (unless
// no_plot) OUT/loss.png.
int run_compare_gather(const std::vector<std::string>& run_dirs, const std::filesystem::path& out, bool no_plot,
                       bool force);

}  // namespace quartet::cli

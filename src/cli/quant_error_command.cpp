// `quartet quant-error`: the numerics.md §8 quantization-error table.
#include <fmt/format.h>

#include <cmath>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>

#include "cli/commands.h"
#include "cli/option_checks.h"
#include "cli/progress.h"
#include "quartet/error.h"
#include "quartet/numerics/quant_error.h"

namespace quartet::cli {

namespace {

struct QuantErrorOptions {
  std::int64_t rows = std::int64_t{1} << 20;
  std::string distribution = "gaussian";
  int draws = 1;
  std::uint64_t seed = 0;
  std::string quantizers;
  bool json = false;
};

// The figures numerics.md §8 gives for the Gaussian protocol (measured on an H100 with the
// public reference implementation).
std::optional<double> reference_rel_mse(QuantizerKind kind) {
  switch (kind) {
    case QuantizerKind::rtn: return 9.05e-3;
    case QuantizerKind::four_over_six: return 7.56e-3;
    case QuantizerKind::sr: return 2.352e-2;
    case QuantizerKind::ms_eden_g128: return 9.76e-3;
    default: return std::nullopt;
  }
}

std::vector<QuantizerKind> parse_quantizer_list(const std::string& list) {
  std::vector<QuantizerKind> out;
  if (list.empty()) return {kAllQuantizers.begin(), kAllQuantizers.end()};
  std::stringstream ss(list);
  std::string name;
  while (std::getline(ss, name, ',')) {
    if (name.empty()) throw Error(fmt::format("--quantizers '{}' has an empty entry", list));
    out.push_back(parse_quantizer(name));
  }
  return out;
}

std::string rotation_label(int size) { return size == 0 ? "none" : fmt::format("RHT-{}", size); }

void print_table(const QuantErrorConfig& config, const std::vector<QuantErrorResult>& results) {
  fmt::print("quant-error: {} rows x {} columns, {}, row scales log-uniform in [1, 256], {} draw{}, seed {}\n\n",
             config.rows, config.cols, distribution_name(config.distribution), config.draws,
             config.draws == 1 ? "" : "s", config.seed);
  const bool draws = config.draws > 1;
  const bool show_reference = config.distribution == Distribution::gaussian;
  std::string header = fmt::format("{:<14} {:>8}  {:>10} {:>9} {:>9} {:>12}", "quantizer", "rotation", "rel. MSE",
                                   "+-", "eff. bits", "misalignment");
  if (draws) header += fmt::format("  {:>14} {:>8}", fmt::format("mean of {}", config.draws), "ratio");
  if (show_reference) header += fmt::format("  {:>10}", "reference");
  fmt::print("{}\n{}\n", header, std::string(header.size(), '-'));
  for (const auto& r : results) {
    std::string line = fmt::format("{:<14} {:>8}  {:>10.4e} {:>9.1e} {:>9.3f} {:>12.2e}", quantizer_name(r.quantizer),
                                   rotation_label(r.rotation_size), r.rel_mse, r.rel_mse_stderr, r.eff_bits,
                                   r.misalignment);
    if (draws) {
      line += fmt::format("  {:>14.4e} {:>8.4f}", r.rel_mse_mean_of_draws, r.rel_mse_mean_of_draws / r.rel_mse);
    }
    if (show_reference) {
      const auto ref = reference_rel_mse(r.quantizer);
      line += ref ? fmt::format("  {:>10.3e}", *ref) : fmt::format("  {:>10}", "");
    }
    fmt::print("{}\n", line);
  }
  fmt::print("\nrel. MSE = mean over rows of ||x - x^||^2 / ||x||^2 (+- one standard error over rows); "
             "eff. bits = -log2(rel. MSE) / 2;\nmisalignment = 1 - mean <x, x^> / <x, x>.");
  if (draws) fmt::print(" 'mean of {}' is the rel. MSE of the average of the draws; ratio = it / rel. MSE.", config.draws);
  if (show_reference) fmt::print("\nreference: numerics.md §8 (public reference implementation, H100, 2^20 rows).");
  fmt::print("\n");
}

nlohmann::json to_json(const QuantErrorConfig& config, const std::vector<QuantErrorResult>& results) {
  nlohmann::json rows = nlohmann::json::array();
  for (const auto& r : results) {
    nlohmann::json o;
    o["quantizer"] = quantizer_name(r.quantizer);
    o["rel_mse"] = r.rel_mse;
    o["eff_bits"] = r.eff_bits;
    o["misalignment"] = r.misalignment;
    if (config.draws > 1) o["rel_mse_mean_of_draws"] = r.rel_mse_mean_of_draws;
    o["rel_mse_stderr"] = r.rel_mse_stderr;
    o["rotation"] = r.rotation_size;
    o["rows"] = config.rows;
    o["cols"] = config.cols;
    o["draws"] = config.draws;
    o["distribution"] = distribution_name(config.distribution);
    o["seed"] = config.seed;
    rows.push_back(std::move(o));
  }
  return rows;
}

}  // namespace

Command add_quant_error_command(CLI::App& parent) {
  auto options = std::make_shared<QuantErrorOptions>();
  CLI::App* app = parent.add_subcommand(
      "quant-error", "Measure every quantizer's error on the numerics.md §8 protocol (rows of 128 values, "
                     "log-uniform row scales, RHT, quantize, rotate back)");
  app->add_option("--rows", options->rows, "number of rows of 128 values")->capture_default_str()->check(integer_in(1, kMaxInt64));
  app->add_option("--dist", options->distribution, "distribution of the values: gaussian, laplace or student-t3")
      ->capture_default_str();
  app->add_option("--draws", options->draws,
                  "independent draws per quantizer (fresh rotation signs and rounding bits); with more than one, "
                  "also reports the error of their mean")
      ->capture_default_str()
      ->check(integer_in(1, kMaxInt32));
  app->add_option("--seed", options->seed, "seed of the input, the rotations and the rounding")
      ->capture_default_str()
      ->check(unsigned_integer());
  app->add_option("--quantizers", options->quantizers,
                  "comma-separated subset of: " + quantizer_names_joined(","));
  app->add_flag("--json", options->json, "print a JSON array instead of the table");

  Command command;
  command.app = app;
  command.run = [options]() {
    QuantErrorConfig config;
    config.rows = options->rows;
    config.distribution = parse_distribution(options->distribution);
    config.draws = options->draws;
    config.seed = options->seed;
    config.quantizers = parse_quantizer_list(options->quantizers);
    config.validate();

    ProgressLine progress("quant-error");
    std::vector<QuantErrorResult> results = run_quant_error(config, [&](int done, int total) {
      const auto& kinds = config.quantizers;
      const int per = config.draws;
      const QuantizerKind kind = kinds[static_cast<std::size_t>((done - 1) / per)];
      progress.update(done, total, fmt::format("{} draw {}/{}", quantizer_name(kind), (done - 1) % per + 1, per));
    });
    progress.finish();
    if (options->json) {
      fmt::print("{}\n", to_json(config, results).dump(2));
    } else {
      print_table(config, results);
    }
    return 0;
  };
  return command;
}

}  // namespace quartet::cli

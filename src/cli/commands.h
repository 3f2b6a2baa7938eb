// Every subcommand registers its options on the top-level CLI11 app and returns the function
// that runs it once parsing has succeeded.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

namespace quartet::cli {

struct Command {
  CLI::App* app = nullptr;
  // Optional: checks the parsed options before anything runs; its Error is a usage error (exit 2).
  std::function<void()> check;
  std::function<int()> run;
};

Command add_quant_error_command(CLI::App& parent);
Command add_train_command(CLI::App& parent);
Command add_compare_command(CLI::App& parent);
Command add_plot_command(CLI::App& parent);
Command add_sample_command(CLI::App& parent);
Command add_prepare_command(CLI::App& parent);
Command add_export_command(CLI::App& parent);
Command add_bench_command(CLI::App& parent);
Command add_diagnose_command(CLI::App& parent);
Command add_eval_command(CLI::App& parent);

}  // namespace quartet::cli

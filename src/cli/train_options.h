// Command-line options that describe a training run, shared by `train` and `compare`.
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <string>

#include "quartet/train/trainer.h"

namespace quartet::cli {

struct TrainOptions {
  TrainConfig config;
  std::string bf16_blocks;           // "first:N,last:M"
  std::string four_over_six;         // "on" / "off"
  std::string backward_quantizer;    // a quantizer name
  int backward_rotation = 0;
  int eden_group = 0;
  double forward_clip = 0, backward_headroom = 0, backward_clip = 0;
  bool forward_only = false, backward_only = false;

  // Turns the raw strings into config fields; throws Error naming the bad option.
  TrainConfig resolve() const;
};

// Registers model, data and optimisation options on `app` (everything but --recipe).
void add_train_options(CLI::App& app, TrainOptions& options);

// "loss 2.345 | lr ... | 12345 tok/s | val ..." for the progress line.
std::string step_summary(const StepMetrics& m);

// Which validation batches the periodic and the final losses cover, and whether the two can be
// compared: both start at the first validation batch, but the final evaluation usually reads more.
std::string validation_note(std::int64_t eval_batches, std::int64_t final_eval_batches);

}  // namespace quartet::cli

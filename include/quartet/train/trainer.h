// The training loop (architecture.md, "Training"): AdamW (beta 0.9/0.95, weight decay on
// matrices), gradient clipping, warmup + cosine schedule, gradient accumulation, evaluation
// (loss and bits per byte), non-finite detection (the step is skipped, counted and logged),
// checkpoints and exact resume. Everything random is counter-based Philox keyed by the seed,
// so a run is a pure function of (config, seed, data).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "quartet/nn/llama.h"
#include "quartet/nn/recipe.h"

namespace quartet {

// Changes to a model preset; 0 means "as the preset says".
struct ModelOverrides {
  std::int64_t d_model = 0;
  std::int64_t n_layers = 0;
  std::int64_t n_heads = 0;
  std::int64_t n_kv_heads = 0;
  std::int64_t ffn_hidden = 0;
  std::int64_t bf16_blocks_first = 0;
  std::int64_t bf16_blocks_last = 0;
};

struct TrainConfig {
  // model
  std::string model_size = "tiny";
  ModelOverrides model_overrides;
  std::string recipe = "quartet2";
  RecipeOptions recipe_options;
  // data
  std::string data = "embedded:austen";
  std::string tokenizer;  // empty: the dataset's own (byte for the embedded corpus)
  // optimisation
  std::int64_t steps = 600;
  std::int64_t batch = 16;
  std::int64_t seq = 128;
  std::int64_t grad_accum = 1;
  double lr = 3e-3;
  double weight_decay = 0.1;
  double grad_clip = 1.0;
  double warmup_fraction = 0.1;
  std::uint64_t seed = 1;
  // evaluation, logging, checkpoints
  std::int64_t eval_every = 100;  // 0: only at the end
  std::int64_t eval_batches = 8;         // per periodic evaluation
  std::int64_t final_eval_batches = 64;  // the final evaluation (the number a comparison reports)
  std::int64_t save_every = 0;  // 0: only at the end (when out_dir is set)
  std::string out_dir;          // empty: no files written
  std::string device = "auto";  // auto: the GPU if there is one, else the CPU

  std::int64_t tokens_per_step() const { return batch * seq * grad_accum; }
  void validate() const;  // throws Error naming the option
  nlohmann::json to_json() const;
  static TrainConfig from_json(const nlohmann::json& j);  // throws Error on bad fields
};

// The learning rate of a step: linear warmup over warmup_fraction of the steps from lr/100
// to lr, then cosine decay to lr/10 at the last step (the paper's schedule).
double learning_rate(const TrainConfig& config, std::int64_t step);

// The model configuration a training config describes (preset plus overrides, vocabulary
// from the tokenizer).
LlamaConfig model_config(const TrainConfig& config, std::int64_t vocab_size);

struct StepMetrics {
  std::int64_t step = 0;  // 1-based: steps completed
  std::int64_t tokens = 0;
  double loss = 0;
  double lr = 0;
  double grad_norm = 0;
  double tokens_per_second = 0;
  std::int64_t skipped = 0;
  bool was_skipped = false;
  std::optional<double> val_loss;
  std::optional<double> val_bpb;
  nlohmann::json to_json() const;
};

struct TrainResult {
  std::vector<StepMetrics> history;  // this run's steps (a resumed run starts after the checkpoint)
  double final_val_loss = 0;
  double final_val_bpb = 0;
  std::int64_t skipped_steps = 0;
  double seconds = 0;
  std::string last_checkpoint;
};

class Tokenizer;

struct TrainCallbacks {
  std::function<void(const std::string&)> log;      // one-off lines (set-up, checkpoints)
  std::function<void(const StepMetrics&)> on_step;  // after every step
  // Once at the end, with the trained model (e.g. to generate a sample).
  std::function<void(Backend&, LlamaModel&, const Tokenizer&)> on_finish;
};

// Runs a training run. Throws Error on bad configuration or data before anything is written.
TrainResult train(const TrainConfig& config, const TrainCallbacks& callbacks = {});

// What may change when a run is resumed; everything else comes from the checkpoint, so the
// run continues bitwise as if it had never stopped (a different step count changes the
// learning-rate schedule, and is reported).
struct ResumeOptions {
  std::optional<std::int64_t> steps;
  std::optional<std::string> out_dir;  // default: the run folder the checkpoint belongs to
  std::optional<std::int64_t> save_every;
};

// Continues from a checkpoint folder or a run folder (its latest checkpoint).
TrainResult resume(const std::string& checkpoint, const ResumeOptions& options = {}, const TrainCallbacks& callbacks = {});

}  // namespace quartet

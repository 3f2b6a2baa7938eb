// A training run's configuration: model, recipe, data, optimisation, evaluation and outputs,
// with its validation and its JSON form (kept in every checkpoint's state.json).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

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
  // The order the training stream is read in: sequential or shuffled (quartet/data/dataset.h's
  // DataOrder). Shuffled draws its permutations from `seed`.
  std::string data_order = "sequential";
  // A checkpoint whose weights the run starts from (initial_weights.h); empty: random weights.
  // The run records the checkpoint folder it read.
  std::string init_from;
  // optimisation
  std::int64_t steps = 600;
  std::int64_t batch = 16;
  std::int64_t seq = 128;
  std::int64_t grad_accum = 1;
  double lr = 3e-3;
  double weight_decay = 0.1;
  double grad_clip = 1.0;
  // The learning-rate schedule (schedule.h, docs/run-options.md). The optional fields are unset
  // when the run did not choose them: their defaults depend on other fields (min_lr on lr, the
  // warmup on steps, which --resume may change), so the default is computed, not stored.
  std::string schedule = "cosine";            // cosine, linear, wsd or constant
  double warmup_fraction = 0.1;               // of steps; used unless warmup_steps is set
  std::optional<std::int64_t> warmup_steps;   // --warmup-steps
  std::optional<double> min_lr;               // unset: lr / 10 (not for constant)
  std::optional<double> decay_fraction;       // wsd only; unset: kDefaultDecayFraction
  // AdamW
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  std::uint64_t seed = 1;
  // evaluation, logging, checkpoints
  std::int64_t eval_every = 100;  // 0: only at the end
  std::int64_t eval_batches = 8;         // per periodic evaluation
  std::int64_t final_eval_batches = 64;  // the final evaluation (the number a comparison reports)
  std::int64_t save_every = 0;  // 0: only at the end (when out_dir is set)
  std::string out_dir;          // empty: no files written
  std::string device = "auto";  // auto: the GPU if there is one, else the CPU

  static constexpr double kDefaultDecayFraction = 0.2;

  std::int64_t tokens_per_step() const { return batch * seq * grad_accum; }
  // The warmup in steps: warmup_steps, else round(warmup_fraction x steps).
  std::int64_t warmup() const;
  void validate() const;  // throws Error naming the option
  nlohmann::json to_json() const;
  // Throws Error naming `source` (e.g. the state.json file) and the field's path under `path`
  // when a field is missing, of the wrong type or invalid.
  static TrainConfig from_json(const nlohmann::json& j, const std::string& source = "training config",
                               const std::string& path = "");
};

// Checks every field a checkpoint's state.json must hold (the step, the data position, the
// tokenizer, the config), so that readers can use them; throws Error naming `source` and the field.
void check_checkpoint_state(const nlohmann::json& state, const std::string& source);

// The model configuration a training config describes (preset plus overrides, vocabulary
// from the tokenizer).
LlamaConfig model_config(const TrainConfig& config, std::int64_t vocab_size);

}  // namespace quartet

#include "cli/train_options.h"

#include <fmt/format.h>

#include <charconv>
#include <regex>

#include "cli/option_checks.h"
#include "quartet/error.h"
#include "quartet/nn/llama.h"
#include "quartet/train/schedule.h"

namespace quartet::cli {

namespace {

// The schedule and AdamW options (docs/run-options.md). Each range here is checked again, with
// the checks across options (min-lr <= lr, warmup < steps), by TrainConfig::validate().
void add_schedule_options(CLI::App& app, TrainConfig& c) {
  app.add_option("--schedule", c.schedule,
                 fmt::format("learning-rate schedule after the warmup: {} (docs/run-options.md)",
                             fmt::join(schedule_names(), ", ")))
      ->capture_default_str();
  // Options whose default depends on other options (the steps, lr) set an optional field, so
  // that an unset one keeps following them; add_option_function runs only when given.
  CLI::Option* steps = app.add_option_function<std::int64_t>(
      "--warmup-steps", [&c](const std::int64_t& v) { c.warmup_steps = v; },
      "warmup steps (default: --warmup-fraction of --steps)");
  steps->check(integer_in(0, kMaxInt64));
  CLI::Option* fraction = app.add_option("--warmup-fraction", c.warmup_fraction, "warmup as a fraction of --steps")
                              ->capture_default_str()
                              ->check(number_in(0, 1, true, false));
  // One warmup length: with both, which one wins would be a rule to remember.
  steps->excludes(fraction);
  app.add_option_function<double>(
         "--min-lr", [&c](const double& v) { c.min_lr = v; },
         "learning rate at the last step, for cosine, linear and wsd (default: --lr / 10)")
      ->check(number_above(0, true));
  app.add_option_function<double>(
         "--decay-fraction", [&c](const double& v) { c.decay_fraction = v; },
         fmt::format("wsd: the last fraction of --steps that decays linearly to --min-lr (default: {})",
                     TrainConfig::kDefaultDecayFraction))
      ->check(number_in(0, 1, false, true));
  app.add_option("--beta1", c.beta1, "AdamW beta1 (first-moment decay)")->capture_default_str()
      ->check(number_in(0, 1, true, false));
  app.add_option("--beta2", c.beta2, "AdamW beta2 (second-moment decay)")->capture_default_str()
      ->check(number_in(0, 1, true, false));
  app.add_option("--eps", c.eps, "AdamW epsilon (added to the root of the second moment)")->capture_default_str()
      ->check(number_above(0));
}

}  // namespace

void add_train_options(CLI::App& app, TrainOptions& o) {
  TrainConfig& c = o.config;
  app.add_option("--model", c.model_size, fmt::format("model size: {}", fmt::join(llama_preset_names(), ", ")))
      ->capture_default_str()
      ->check(name_one_of(llama_preset_names()));
  app.add_option("--d-model", c.model_overrides.d_model, "override the model width")
      ->check(integer_in(1, kMaxInt32));
  app.add_option("--layers", c.model_overrides.n_layers, "override the number of blocks")
      ->check(integer_in(1, kMaxInt32));
  app.add_option("--heads", c.model_overrides.n_heads, "override the number of attention heads")
      ->check(integer_in(1, kMaxInt32));
  app.add_option("--kv-heads", c.model_overrides.n_kv_heads, "override the number of key/value heads")
      ->check(integer_in(1, kMaxInt32));
  app.add_option("--ffn", c.model_overrides.ffn_hidden, "override the SwiGLU hidden size")
      ->check(integer_in(1, kMaxInt32));
  app.add_option("--bf16-blocks", o.bf16_blocks, "keep blocks in BF16, as 'first:N,last:M' (NVIDIA's published recipe)");
  app.add_option("--data", c.data, "embedded:austen or a folder of shards made by `quartet prepare`")->capture_default_str();
  app.add_option("--tokenizer", c.tokenizer, "byte or gpt2 (for the embedded corpus; shard folders name their own)")
      ->check(name_one_of({"byte", "gpt2"}));
  app.add_option("--data-order", c.data_order,
                 "sequential (each batch the next span of the training stream) or shuffled (each sequence a window "
                 "of the stream in a seeded random order, new each epoch)")
      ->capture_default_str()
      ->check(name_one_of({"sequential", "shuffled"}));
  app.add_option("--init-from", c.init_from,
                 "start from the weights of this checkpoint (or run folder: its latest) instead of random ones: a "
                 "model of the same shape, under any recipe; a new run, with its own optimizer and schedule");
  app.add_option("--steps", c.steps, "optimizer steps")->capture_default_str()
      ->check(integer_in(1, kMaxInt64));
  app.add_option("--batch", c.batch, "sequences per micro-batch")->capture_default_str()
      ->check(integer_in(1, kMaxInt32));
  app.add_option("--seq", c.seq, "tokens per sequence")->capture_default_str()
      ->check(integer_in(2, kMaxInt32));
  app.add_option("--grad-accum", c.grad_accum, "micro-batches per step")->capture_default_str()
      ->check(integer_in(1, kMaxInt32));
  app.add_option("--lr", c.lr, "peak learning rate (reached after the warmup; see --schedule)")->capture_default_str()
      ->check(number_above(0));
  add_schedule_options(app, c);
  app.add_option("--weight-decay", c.weight_decay, "AdamW weight decay on matrices")->capture_default_str()
      ->check(number_above(0, true));
  app.add_option("--grad-clip", c.grad_clip, "gradient norm clip")->capture_default_str()
      ->check(number_above(0));
  app.add_option("--seed", c.seed, "seed of initialisation and every random draw")->capture_default_str()
      ->check(unsigned_integer());
  app.add_option("--eval-every", c.eval_every, "steps between evaluations (0: only at the end)")->capture_default_str()
      ->check(integer_in(0, kMaxInt64));
  app.add_option("--eval-batches", c.eval_batches, "validation batches per periodic evaluation")->capture_default_str()
      ->check(integer_in(1, kMaxInt64));
  app.add_option("--final-eval-batches", c.final_eval_batches, "validation batches of the final evaluation")
      ->capture_default_str()
      ->check(integer_in(1, kMaxInt64));
  app.add_option("--device", c.device, "auto (the GPU if there is one), cpu or cuda")->capture_default_str();
  app.add_flag("--forward-only", o.forward_only, "ablation: quantize only the forward pass");
  app.add_flag("--backward-only", o.backward_only, "ablation: quantize only the backward pass");
  app.add_option("--four-over-six", o.four_over_six, "ablation: 4/6 in the forward pass on or off");
  app.add_option("--backward-rotation", o.backward_rotation, "ablation: backward RHT size 16, 32 or 128")
      ->check(integer_one_of({16, 32, 128}));
  app.add_option("--eden-group", o.eden_group, "ablation: MS-EDEN correction group 16 (canonical) or 128 (research)")
      ->check(integer_one_of({16, 128}));
  app.add_option("--forward-clip", o.forward_clip, "ablation: RTN clip factor of the forward quantizers")
      ->check(number_above(0));
  app.add_option("--backward-headroom", o.backward_headroom, "ablation: SR / MS-EDEN headroom")
      ->check(number_above(0));
  app.add_option("--backward-clip", o.backward_clip, "ablation: MS-EDEN clip")
      ->check(number_above(0));
  app.add_option("--backward-quantizer", o.backward_quantizer, "research: replace every backward quantizer");
}

TrainConfig TrainOptions::resolve() const {
  TrainConfig c = config;
  if (!bf16_blocks.empty()) {
    const std::regex pattern(R"(first:(\d+),last:(\d+))");
    std::smatch m;
    if (!std::regex_match(bf16_blocks, m, pattern)) {
      throw Error(fmt::format("--bf16-blocks '{}' is not of the form first:N,last:M", bf16_blocks));
    }
    // std::stoll would throw std::out_of_range (an "internal error") on a huge count.
    const auto count = [&](const std::string& digits, const char* which) {
      std::int64_t v = 0;
      const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), v);
      if (ec != std::errc() || end != digits.data() + digits.size() || v > kMaxInt32) {
        throw Error(fmt::format("--bf16-blocks '{}': {} must be in [0, {}], got {}", bf16_blocks, which, kMaxInt32, digits));
      }
      return v;
    };
    c.model_overrides.bf16_blocks_first = count(m[1], "first");
    c.model_overrides.bf16_blocks_last = count(m[2], "last");
  }
  RecipeOptions& r = c.recipe_options;
  if (forward_only && backward_only) throw Error("--forward-only and --backward-only exclude each other");
  r.quantize_backward = !forward_only;
  r.quantize_forward = !backward_only;
  if (!four_over_six.empty()) {
    if (four_over_six != "on" && four_over_six != "off") {
      throw Error(fmt::format("--four-over-six must be on or off, got '{}'", four_over_six));
    }
    r.four_over_six = four_over_six == "on";
  }
  if (backward_rotation) r.backward_rotation = backward_rotation;
  if (eden_group) r.eden_group = eden_group;
  if (forward_clip) r.forward_clip = forward_clip;
  if (backward_headroom) r.backward_headroom = backward_headroom;
  if (backward_clip) r.backward_clip = backward_clip;
  if (!backward_quantizer.empty()) r.backward_quantizer = parse_quantizer(backward_quantizer);
  c.validate();
  make_recipe(c.recipe, r);  // reject impossible ablations now, before any work
  return c;
}

std::string step_summary(const StepMetrics& m) {
  std::string s = fmt::format("loss {:.4f} | lr {:.2e} | grad {:.3f} | {:.0f} tok/s", m.loss, m.lr, m.grad_norm,
                              m.tokens_per_second);
  if (m.skipped) s += fmt::format(" | skipped {}", m.skipped);
  if (m.val_loss) s += fmt::format(" | val {:.4f} ({:.3f} bpb)", *m.val_loss, *m.val_bpb);
  if (m.diagnostics_seconds) s += fmt::format(" | diagnostics {:.1f}s", *m.diagnostics_seconds);
  return s;
}

std::string validation_note(std::int64_t eval_batches, std::int64_t final_eval_batches) {
  if (eval_batches == final_eval_batches) {
    return fmt::format("(val loss: the first {} validation batches, the same batches as every periodic val; "
                       "fewer if the validation split is smaller)",
                       final_eval_batches);
  }
  return fmt::format("(val loss: the final evaluation over the first {} validation batches (--final-eval-batches); "
                     "the periodic val values cover the first {} (--eval-batches), so they are not directly "
                     "comparable with it; fewer if the validation split is smaller)",
                     final_eval_batches, eval_batches);
}

}  // namespace quartet::cli

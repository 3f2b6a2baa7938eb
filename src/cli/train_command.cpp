// `quartet train`: the main job. With no arguments it trains the tiny model with the quartet2
// recipe on the embedded corpus, prints a progress line, the final validation loss and bits
// per byte, and a short generated sample.
#include <fmt/format.h>

#include <filesystem>
#include <memory>

#include "cli/commands.h"
#include "cli/config_file.h"
#include "cli/progress.h"
#include "cli/train_options.h"
#include "quartet/data/tokenizer.h"
#include "quartet/error.h"
#include "quartet/util/text.h"
#include "quartet/nn/generate.h"
#include "quartet/train/checkpoint.h"

namespace quartet::cli {

namespace {

struct TrainCommandOptions {
  TrainOptions train;
  std::string config_file;
  std::string resume;
  std::int64_t sample_tokens = 200;
  bool quiet = false;
};

std::string sample_text(Backend& backend, LlamaModel& model, const Tokenizer& tokenizer, std::int64_t tokens) {
  SamplingOptions s;
  s.max_tokens = tokens;
  s.stop_token = tokenizer.eot();
  // A byte-level model can emit bytes that are not UTF-8: print them as U+FFFD.
  return sanitize_utf8(tokenizer.decode(generate(backend, model, {tokenizer.eot()}, s)));
}

}  // namespace

Command add_train_command(CLI::App& parent) {
  auto o = std::make_shared<TrainCommandOptions>();
  CLI::App* app = parent.add_subcommand(
      "train", "Train a Llama model with a 4-bit recipe (default: quartet2, tiny model, embedded corpus)");
  app->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  add_config_option(*app, o->config_file);
  app->add_option("--recipe", o->train.config.recipe,
                  "bf16, nvidia, nvidia+4/6, tetrajet2, quartet2, quartet1 or quartet1-sr")
      ->capture_default_str();
  add_train_options(*app, o->train);
  app->add_option("--out", o->train.config.out_dir, "run folder: metrics.jsonl and checkpoints/");
  app->add_option("--save-every", o->train.config.save_every, "steps between checkpoints (0: only at the end)")
      ->capture_default_str();
  app->add_option("--resume", o->resume, "continue from a checkpoint folder or a run folder (its latest checkpoint)");
  app->add_option("--sample-tokens", o->sample_tokens, "tokens of generated text to print at the end (0: none)")
      ->capture_default_str();
  app->add_flag("--quiet", o->quiet, "no progress line");

  Command command;
  command.app = app;
  command.run = [o, app]() {
    ProgressLine progress("train");
    std::int64_t total_steps = 0;
    TrainCallbacks callbacks;
    callbacks.log = [&](const std::string& line) {
      progress.finish();
      fmt::print(stderr, "{}\n", line);
    };
    callbacks.on_step = [&](const StepMetrics& m) {
      if (!o->quiet) progress.update(m.step, total_steps, step_summary(m), m.val_loss.has_value());
    };
    std::string sample;
    callbacks.on_finish = [&](Backend& backend, LlamaModel& model, const Tokenizer& tokenizer) {
      if (o->sample_tokens > 0) sample = sample_text(backend, model, tokenizer, o->sample_tokens);
    };

    TrainResult result;
    std::string out_dir;
    if (!o->resume.empty()) {
      // Only these may change on resume; everything else comes from the checkpoint.
      for (const char* flag : {"--model", "--recipe", "--data", "--batch", "--seq", "--lr", "--seed", "--grad-accum"}) {
        if (app->count(flag) > 0) {
          throw Error(fmt::format("{} cannot change when resuming: the run continues with its checkpoint's settings",
                                  flag));
        }
      }
      ResumeOptions r;
      if (app->count("--steps")) r.steps = o->train.config.steps;
      if (app->count("--out")) r.out_dir = o->train.config.out_dir;
      if (app->count("--save-every")) r.save_every = o->train.config.save_every;
      const nlohmann::json state = read_checkpoint_state(resolve_checkpoint(o->resume));
      total_steps = r.steps ? *r.steps : state.at("config").at("steps").get<std::int64_t>();
      result = resume(o->resume, r, callbacks);
    } else {
      const TrainConfig config = o->train.resolve();
      total_steps = config.steps;
      result = train(config, callbacks);
    }
    progress.finish();
    if (result.history.empty()) return 0;
    const StepMetrics& last = result.history.back();
    fmt::print("final: step {} | train loss {:.4f} | val loss {:.4f} | val {:.4f} bits per byte | {} skipped steps | {}\n",
               last.step, last.loss, result.final_val_loss, result.final_val_bpb, result.skipped_steps,
               format_duration(result.seconds));
    if (!result.last_checkpoint.empty()) fmt::print("checkpoint: {}\n", result.last_checkpoint);
    if (!sample.empty()) fmt::print("sample:\n{}\n", sample);
    return 0;
  };
  return command;
}

}  // namespace quartet::cli

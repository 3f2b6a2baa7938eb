// `quartet train`: the main job. With no arguments it trains the tiny model with the quartet2
// recipe on the embedded corpus, prints a progress line, the final validation loss and bits
// per byte, and a short generated sample.
#include <fmt/format.h>

#include <filesystem>
#include <memory>
#include <set>

#include "cli/commands.h"
#include "cli/config_file.h"
#include "cli/option_checks.h"
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
  TrainConfig resolved;  // set by the command's check (a new run)
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
      ->capture_default_str()
      ->check(integer_in(0, kMaxInt64));
  app->add_option("--resume", o->resume, "continue from a checkpoint folder or a run folder (its latest checkpoint)");
  app->add_option("--sample-tokens", o->sample_tokens, "tokens of generated text to print at the end (0: none)")
      ->capture_default_str()
      ->check(integer_in(0, kMaxInt32));
  app->add_flag("--quiet", o->quiet, "no progress line");

  Command command;
  command.app = app;
  command.check = [o, app]() {
    if (o->resume.empty()) {
      o->resolved = o->train.resolve();
      return;
    }
    // Everything else comes from the checkpoint: any other option would be silently ignored.
    const std::set<std::string> allowed = {"--resume", "--steps", "--out", "--save-every", "--sample-tokens", "--quiet"};
    for (const CLI::Option* option : app->get_options()) {
      if (option->count() > 0 && allowed.count(option->get_name()) == 0) {
        throw Error(fmt::format("{} cannot change when resuming: the run continues with its checkpoint's settings "
                                "(on resume only {} apply)",
                                option->get_name(), fmt::join(allowed, ", ")));
      }
    }
  };
  command.run = [o, app]() {
    ProgressLine progress("train");
    progress.set_silent(o->quiet);
    std::int64_t total_steps = 0;
    TrainCallbacks callbacks;
    callbacks.log = [&](const std::string& line) {
      progress.finish();
      fmt::print(stderr, "{}\n", line);
    };
    callbacks.on_step = [&](const StepMetrics& m) {
      progress.update(m.step, total_steps, step_summary(m), m.val_loss.has_value());
    };
    std::string sample;
    callbacks.on_finish = [&](Backend& backend, LlamaModel& model, const Tokenizer& tokenizer) {
      if (o->sample_tokens > 0) sample = sample_text(backend, model, tokenizer, o->sample_tokens);
    };

    TrainResult result;
    std::int64_t eval_batches = 0, final_eval_batches = 0;
    if (!o->resume.empty()) {
      ResumeOptions r;
      if (app->count("--steps")) r.steps = o->train.config.steps;
      if (app->count("--out")) r.out_dir = o->train.config.out_dir;
      if (app->count("--save-every")) r.save_every = o->train.config.save_every;
      const nlohmann::json state = read_checkpoint_state(resolve_checkpoint(o->resume));  // fields checked
      const TrainConfig saved = TrainConfig::from_json(state.at("config"));
      total_steps = r.steps ? *r.steps : saved.steps;
      eval_batches = saved.eval_batches;
      final_eval_batches = saved.final_eval_batches;
      progress.set_start(static_cast<long>(state.at("step").get<std::int64_t>()));
      result = resume(o->resume, r, callbacks);
    } else {
      total_steps = o->resolved.steps;
      eval_batches = o->resolved.eval_batches;
      final_eval_batches = o->resolved.final_eval_batches;
      result = train(o->resolved, callbacks);
    }
    progress.finish();
    if (result.history.empty()) return 0;
    const StepMetrics& last = result.history.back();
    // The elapsed time is the progress line's (the same clock, read at the same moment), so the
    // two never disagree.
    fmt::print("final: step {} | train loss {:.4f} | val loss {:.4f} | val {:.4f} bits per byte | {} skipped steps | {}\n",
               last.step, last.loss, result.final_val_loss, result.final_val_bpb, result.skipped_steps,
               format_duration(progress.last_elapsed()));
    fmt::print(stderr, "{}\n", validation_note(eval_batches, final_eval_batches));
    if (!result.last_checkpoint.empty()) fmt::print("checkpoint: {}\n", result.last_checkpoint);
    if (!sample.empty()) fmt::print("sample:\n{}\n", sample);
    return 0;
  };
  return command;
}

}  // namespace quartet::cli

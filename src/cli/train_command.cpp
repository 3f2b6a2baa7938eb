// `quartet train`: the main job. With no arguments it trains the tiny model with the quartet2
// recipe on the embedded corpus, prints a progress line, the final validation loss and bits
// per byte, and a short generated sample.
#include <fmt/format.h>

#include <cmath>
#include <filesystem>
#include <memory>
#include <algorithm>
#include <cstdlib>
#include <optional>
#include <set>
#include <thread>

#include "cli/commands.h"
#include "cli/config_file.h"
#include "cli/diagnostics_plot.h"
#include "cli/exit_codes.h"
#include "cli/option_checks.h"
#include "cli/progress.h"
#include "cli/stop_signals.h"
#include "cli/training_plot.h"
#include "cli/train_options.h"
#include "cli/train_summary.h"
#include "quartet/backend/cuda.h"
#include "quartet/data/tokenizer.h"
#include "quartet/dist/environment.h"
#include "quartet/dist/launcher.h"
#include "cli/own_arguments.h"
#include "quartet/error.h"
#include "quartet/util/text.h"
#include "quartet/nn/generate.h"
#include "quartet/nn/llama.h"
#include "quartet/nn/recipe.h"
#include "quartet/train/checkpoint.h"
#include "quartet/train/diagnostics.h"
#include "quartet/util/files.h"

#ifndef QUARTET_GIT_COMMIT
#define QUARTET_GIT_COMMIT "unknown"
#endif

namespace quartet::cli {

namespace {

struct TrainCommandOptions {
  TrainOptions train;
  TrainConfig resolved;  // set by the command's check (a new run)
  std::string config_file;
  std::string resume;
  std::int64_t sample_tokens = 200;
  std::int64_t max_skipped_steps = RunControl{}.max_skipped_steps;
  std::int64_t keep_last = 0;
  std::int64_t diagnostics = 0;
  std::int64_t diagnostics_tokens = RunControl{}.diagnostics_tokens;
  double save_every_minutes = 0;
  bool force = false;
  bool quiet = false;
  bool no_plot = false;
  bool tensorboard = false;
  bool json = false;
  std::int64_t gpus = 0;       // --gpus N: one rank per GPU of this node
  std::int64_t processes = 0;  // --processes N: N ranks on this node (any device; CPU runs, tests)
};

// Set in the ranks `quartet train --gpus N` starts, whose command line still holds --gpus N:
// they are ranks, not launchers.
constexpr const char* kLaunchedRank = "QUARTET_LAUNCHED_RANK";


// `--gpus N` / `--processes N` in the launcher: start the ranks and wait for them.
int launch_ranks(const TrainCommandOptions& o) {
  const std::int64_t n = o.gpus > 0 ? o.gpus : o.processes;
  LocalLaunch launch;
  launch.args = own_arguments();
  launch.processes = static_cast<int>(n);
  launch.extra_environment[kLaunchedRank] = "1";
  // CPU ranks share the machine's cores: OpenMP's default (every core per process) would
  // oversubscribe them. A value the user set is kept.
  if (o.gpus == 0 && std::getenv("OMP_NUM_THREADS") == nullptr) {
    const long cores = std::max(1L, static_cast<long>(std::thread::hardware_concurrency()));
    launch.extra_environment["OMP_NUM_THREADS"] = std::to_string(std::max(1L, cores / n));
  }
  launch.log = [](const std::string& line) { fmt::print(stderr, "quartet: {}\n", line); };
  return launch_local(launch);
}

// What --resume may change: how the run goes on, not what is trained. Every other option is
// refused (rather than silently ignored), including options added later.
const std::set<std::string> kResumeMayChange = {
    "--resume",      "--steps",        "--out",          "--save-every", "--eval-every",        "--eval-batches",
    "--final-eval-batches", "--device", "--sample-tokens", "--quiet",     "--max-skipped-steps", "--config",
    "--force",       "--help",         "--keep-last",    "--save-every-minutes", "--no-plot",
    "--tensorboard", "--json",        "--diagnostics", "--diagnostics-tokens", "--gpus",     "--processes"};

void refuse_fixed_options_on_resume(const CLI::App& app) {
  for (const CLI::Option* option : app.get_options()) {
    if (option->count() == 0) continue;
    const std::string name = option->get_name();
    if (kResumeMayChange.count(name) == 0) {
      throw Error(fmt::format("{} cannot change when resuming: the run continues with its checkpoint's settings "
                              "(those that may change: --steps, --out, --save-every, --eval-every, --eval-batches, "
                              "--final-eval-batches, --device, --max-skipped-steps, --keep-last, --save-every-minutes, --no-plot, "
                              "--tensorboard, --json, --diagnostics, --diagnostics-tokens, --force, --gpus, --processes)",
                              name));
    }
  }
}

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
  // Run controls (RunControl): not saved in checkpoints, so give them again on --resume.
  app->add_option("--keep-last", o->keep_last, "keep only this many most recent checkpoints (0: all)")
      ->capture_default_str()
      ->check(integer_in(0, kMaxInt64));
  app->add_option("--save-every-minutes", o->save_every_minutes,
                  "also save when this many minutes have passed since the last save (0: off)")
      ->capture_default_str()
      ->check(number_above(0, true));
  app->add_option("--resume", o->resume, "continue from a checkpoint folder or a run folder (its latest checkpoint)");
  app->add_flag("--force", o->force,
                "replace the run already in --out (its metrics and checkpoints); with --resume from an older "
                "checkpoint of the run, rewind the run to it");
  app->add_option("--max-skipped-steps", o->max_skipped_steps,
                  "stop with an error after this many consecutive skipped (non-finite) steps (0: never)")
      ->capture_default_str()
      ->check(integer_in(0, kMaxInt64));
  app->add_option("--sample-tokens", o->sample_tokens, "tokens of generated text to print at the end (0: none)")
      ->capture_default_str()
      ->check(integer_in(0, kMaxInt32));
  app->add_flag("--quiet", o->quiet, "no progress line");
  app->add_flag("--no-plot", o->no_plot, "do not draw OUT/training.png at the end (docs/plot.md)");
  app->add_flag("--tensorboard", o->tensorboard,
                "also write the metrics as TensorBoard events in OUT/tensorboard/ (docs/run-tracking.md)");
  app->add_option("--diagnostics", o->diagnostics,
                  "every N steps, measure each quantized GEMM's operand and product errors on the step's first "
                  "micro-batch into OUT/metrics.jsonl and OUT/diagnostics.png; the run is unchanged "
                  "(docs/diagnostics.md; 0: off)")
      ->capture_default_str()
      ->check(integer_in(0, kMaxInt64));
  app->add_option("--diagnostics-tokens", o->diagnostics_tokens,
                  "measure the diagnostics' activations and gradients on the micro-batch's first N tokens: a multiple "
                  "of 128, or 0 for all (docs/diagnostics.md)")
      ->capture_default_str()
      ->check(integer_in(0, kMaxInt64));
  app->add_option("--gpus", o->gpus,
                  "train data-parallel on N GPUs of this machine, one process each (implies --device cuda; "
                  "--grad-accum must be a multiple of N; docs/multi-gpu.md)")
      ->check(integer_in(1, 4096));
  app->add_option("--processes", o->processes,
                  "train data-parallel in N processes of this machine on the --device (e.g. cpu, for tests); "
                  "--grad-accum must be a multiple of N (docs/multi-gpu.md)")
      ->check(integer_in(1, 4096));
  app->add_flag("--json", o->json,
                "print one JSON summary of the run on stdout at the end, and nothing else there (docs/run-tracking.md)");

  Command command;
  command.app = app;
  command.check = [o, app]() {
    if (o->gpus > 0 && o->processes > 0) throw Error("--gpus and --processes both start ranks: give one of them");
    if (o->gpus > 0) {
      if (app->count("--device") > 0 && o->train.config.device != "cuda") {
        throw Error(fmt::format("--gpus trains on GPUs, but --device is {}: for several CPU processes use --processes",
                                o->train.config.device));
      }
      o->train.config.device = "cuda";
      // Checked here, once, rather than by every rank after the launch.
      const int usable = cuda_device_count();
      if (std::getenv(kLaunchedRank) == nullptr && usable < o->gpus) {
        throw Error(usable == 0 ? fmt::format("--gpus {}: {}", o->gpus, cuda_device_description())
                                : fmt::format("--gpus {} asks for more GPUs than the {} this process may use ({}{})",
                                              o->gpus, usable, cuda_device_description(),
                                              std::getenv("CUDA_VISIBLE_DEVICES") != nullptr
                                                  ? "; CUDA_VISIBLE_DEVICES limits them"
                                                  : ""));
      }
    }
    if ((o->gpus > 0 || o->processes > 0) && std::getenv(kLaunchedRank) == nullptr &&
        dist_environment_from_process().has_value()) {
      throw Error(
          "--gpus and --processes start their own ranks, but RANK/WORLD_SIZE/LOCAL_RANK are set (torchrun, Slurm): "
          "under an external launcher leave them out, every process is one rank (docs/multi-gpu.md)");
    }
    // Here as well as in the trainer: a usage error (exit 2), found before anything runs.
    check_token_limit(o->diagnostics_tokens, "--diagnostics-tokens");
    if (o->resume.empty()) {
      o->resolved = o->train.resolve();
      // The model's shape and the recipe's fit to it, as usage errors found before anything
      // runs (the trainer checks them again with the data's vocabulary, which they do not
      // depend on; 257 is the byte tokenizer's).
      const LlamaConfig shape = model_config(o->resolved, 257);
      check_recipe_fits(shape, make_recipe(o->resolved.recipe, o->resolved.recipe_options),
                        o->resolved.batch * o->resolved.seq);
      // Without --out nothing is saved, so these would silently do nothing.
      for (const char* flag : {"--keep-last", "--save-every-minutes", "--tensorboard"}) {
        if (app->count(flag) > 0 && o->resolved.out_dir.empty()) throw Error(fmt::format("{} needs --out", flag));
      }
      if (o->diagnostics > 0 && o->resolved.out_dir.empty()) {
        throw Error("--diagnostics needs --out: the measurements go to OUT/metrics.jsonl");
      }
      return;
    }
    refuse_fixed_options_on_resume(*app);
  };
  command.run = [o, app]() {
    // The launcher of --gpus / --processes trains nothing itself.
    if ((o->gpus > 0 || o->processes > 0) && std::getenv(kLaunchedRank) == nullptr) return launch_ranks(*o);
    const std::optional<DistEnvironment> dist = dist_environment_from_process();
    const bool lead = !dist || dist->rank == 0;
    ProgressLine progress("train");
    progress.set_silent(o->quiet);
    std::int64_t total_steps = 0;
    TrainCallbacks callbacks;
    callbacks.log = [&](const std::string& line) {
      progress.finish();
      fmt::print(stderr, "{}\n", line);
    };
    callbacks.on_step = [&](const StepMetrics& m) {
      // Steps with an evaluation or diagnostics stay on screen (and in a log): their figures and what
      // they cost.
      progress.update(m.step, total_steps, step_summary(m), m.val_loss.has_value() || m.diagnostics_seconds.has_value());
    };
    std::string sample;
    callbacks.on_finish = [&](Backend& backend, LlamaModel& model, const Tokenizer& tokenizer) {
      if (o->sample_tokens > 0) sample = sample_text(backend, model, tokenizer, o->sample_tokens);
    };

    if (o->max_skipped_steps < 0) {
      throw Error(fmt::format("--max-skipped-steps must be 0 (never stop) or more, got {}", o->max_skipped_steps));
    }
    StopSignals signals;
    RunControl control;
    control.max_skipped_steps = o->max_skipped_steps;
    control.stop = &signals.requested();
    control.keep_last = o->keep_last;
    control.save_every_minutes = o->save_every_minutes;
    control.commit = QUARTET_GIT_COMMIT;
    control.tensorboard = o->tensorboard;
    control.diagnostics_every = o->diagnostics;
    control.diagnostics_tokens = o->diagnostics_tokens;
    control.distributed = dist;

    control.replace_existing_run = o->force;
    TrainResult result;
    std::string run_dir;  // where training.png goes; empty without --out
    std::int64_t eval_batches = 0, final_eval_batches = 0;
    if (!o->resume.empty()) {
      const TrainConfig& given = o->train.config;
      ResumeOptions r;
      if (app->count("--steps")) r.steps = given.steps;
      if (app->count("--out")) r.out_dir = given.out_dir;
      if (app->count("--save-every")) r.save_every = given.save_every;
      if (app->count("--eval-every")) r.eval_every = given.eval_every;
      if (app->count("--eval-batches")) r.eval_batches = given.eval_batches;
      if (app->count("--final-eval-batches")) r.final_eval_batches = given.final_eval_batches;
      if (app->count("--device") || o->gpus > 0) r.device = given.device;
      const nlohmann::json state = read_checkpoint_state(resolve_checkpoint(o->resume));  // fields checked
      const TrainConfig saved = TrainConfig::from_json(state.at("config"));
      total_steps = r.steps ? *r.steps : saved.steps;
      eval_batches = r.eval_batches ? *r.eval_batches : saved.eval_batches;
      final_eval_batches = r.final_eval_batches ? *r.final_eval_batches : saved.final_eval_batches;
      progress.set_start(static_cast<long>(state.at("step").get<std::int64_t>()));
      // As resume() chooses it: the folder the checkpoint belongs to, unless --out moves the run.
      run_dir = r.out_dir ? *r.out_dir : resolve_checkpoint(o->resume).parent_path().parent_path().string();
      result = resume(o->resume, r, callbacks, control);
    } else {
      // Before any work: an existing run is never overwritten by accident. Rank 0 alone looks
      // (the others would find the folder it has just started writing).
      if (lead) check_run_folder(o->resolved.out_dir, control);
      total_steps = o->resolved.steps;
      eval_batches = o->resolved.eval_batches;
      final_eval_batches = o->resolved.final_eval_batches;
      run_dir = o->resolved.out_dir;
      result = train(o->resolved, callbacks, control);
    }
    progress.finish();
    // The other ranks trained the same run: rank 0 reports it.
    if (!lead) return result.stopped ? signals.exit_status() : 0;
    SummaryContext base_context;
    base_context.commit = control.commit;
    base_context.out_dir = run_dir;
    base_context.total_steps = total_steps;
    // --json: stdout holds the summary object only; everything for people goes to stderr.
    const auto print_summary = [&]() {
      SummaryContext context = base_context;
      context.sample_requested = o->sample_tokens > 0;
      context.sample = sample;
      fmt::print("{}\n", train_summary(result, context).dump());
      std::fflush(stdout);
    };
    if (result.stopped) {
      if (result.last_checkpoint.empty()) {
        fmt::print(stderr, "quartet: stopped by signal {} after step {}; nothing saved (no --out)\n",
                   signals.signal_number(), result.history.empty() ? 0 : result.history.back().step);
      } else {
        fmt::print(stderr, "quartet: stopped by signal {} after step {}; checkpoint saved in {}\n"
                   "continue with: quartet train --resume {}\n",
                   signals.signal_number(), result.history.back().step, result.last_checkpoint, result.last_checkpoint);
      }
      if (o->json) print_summary();
      return signals.exit_status();
    }
    // A finished run's outcome and configuration stay in its folder (run.json), so that
    // `quartet compare --from` can gather runs made separately, without their checkpoints.
    if (!run_dir.empty() && !result.last_checkpoint.empty()) {
      nlohmann::json record = train_summary(result, base_context);
      record["config"] = read_checkpoint_state(result.last_checkpoint).at("config");
      write_file_atomic(std::filesystem::path(run_dir) / "run.json", record.dump(2) + "\n");
    }
    // A run whose final validation loss is not finite diverged: everything is written as for any
    // finished run (run.json, the checkpoint, the metrics), but the exit status says it failed,
    // so that a script does not take it for a result.
    const auto finished_status = [&]() {
      if (std::isfinite(result.final_val_loss)) return kExitOk;
      std::fflush(stdout);
      fmt::print(stderr,
                 "quartet train: error: the run finished, but its final validation loss is {}: the model diverged "
                 "(see the loss and gradient norm in the metrics; a lower --lr may help); its files are kept\n",
                 result.final_val_loss);
      return kExitRuntimeError;
    };
    if (o->json) {
      fmt::print(stderr, "{}\n", validation_note(eval_batches, final_eval_batches));
      if (!run_dir.empty() && !o->no_plot) plot_finished_run(run_dir, stderr);
      if (!run_dir.empty() && !o->no_plot && o->diagnostics > 0) plot_finished_diagnostics(run_dir, stderr);
      print_summary();
      return finished_status();
    }
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
    if (!run_dir.empty() && !o->no_plot) plot_finished_run(run_dir);
    if (!run_dir.empty() && !o->no_plot && o->diagnostics > 0) plot_finished_diagnostics(run_dir);
    return finished_status();
  };
  return command;
}

}  // namespace quartet::cli

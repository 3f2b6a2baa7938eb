// The training loop (architecture.md, "Training"): AdamW (beta 0.9/0.95 by default, weight
// decay on matrices), gradient clipping, warmup + decay schedule (schedule.h; cosine by
// default), gradient accumulation, evaluation (loss and bits per byte), non-finite detection
// (the step is skipped, counted and logged), checkpoints and exact resume. Everything random
// is counter-based Philox keyed by the seed, so a run is a pure function of (config, seed, data).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "quartet/dist/environment.h"
#include "quartet/nn/llama.h"
#include "quartet/nn/recipe.h"
#include "quartet/train/config.h"
#include "quartet/train/schedule.h"

namespace quartet {

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
  // Wall seconds the step's quantization diagnostics took (--diagnostics), when it had them; they
  // have their own metrics.jsonl record, so to_json() leaves this out.
  std::optional<double> diagnostics_seconds;
  // Run tracking (docs/run-tracking.md): when the step ended, in Unix seconds and in wall
  // seconds since the run's first step (counting the earlier processes of a resumed run up to
  // its checkpoint), and the commit of the build that ran it.
  double unix_time = 0;
  double elapsed_seconds = 0;
  std::string commit;
  nlohmann::json to_json() const;  // one metrics.jsonl line
};

struct TrainResult {
  std::vector<StepMetrics> history;  // this run's steps (a resumed run starts after the checkpoint)
  double final_val_loss = 0;
  double final_val_bpb = 0;
  std::int64_t skipped_steps = 0;
  double seconds = 0;
  // The tokens this process trained over the time its steps took (evaluations and checkpoints
  // left out, as in StepMetrics::tokens_per_second).
  double tokens_per_second = 0;
  double elapsed_seconds = 0;  // at the end, as StepMetrics::elapsed_seconds counts it
  std::int64_t start_step = 0;  // the checkpoint's step for a resumed run, else 0
  std::string tensorboard_file;  // the events file this process wrote (RunControl::tensorboard)
  std::string last_checkpoint;
  std::string init_from;  // the checkpoint whose weights the run started from (--init-from), or empty
  bool stopped = false;  // RunControl::stop was set: the run ended early, after a checkpoint
};

class Tokenizer;

struct TrainCallbacks {
  std::function<void(const std::string&)> log;      // one-off lines (set-up, checkpoints)
  std::function<void(const StepMetrics&)> on_step;  // after every step
  // Once at the end, with the trained model (e.g. to generate a sample).
  std::function<void(Backend&, LlamaModel&, const Tokenizer&)> on_finish;
};

// Whether the trainer queues the next step before it reads the last one's outcome (loss,
// gradient norm), so that the device never waits for the host between steps. automatic: on a
// device backend (CUDA), where the work is queued; the CPU backend runs each step as it is
// queued and gains nothing. A one-process run only (the ranks of a data-parallel run agree on
// saves and stops after every step). The run is the same bits either way; a stop request then
// finishes both steps in flight.
enum class StepOverlap { automatic, on, off };

// How this process runs the training, as opposed to what is trained: not saved in checkpoints,
// so it may differ when a run is resumed.
struct RunControl {
  // train() into an out_dir that already holds a run (metrics.jsonl or checkpoints/) is refused
  // unless this is set; then the old run's metrics and checkpoints are removed first, so the
  // folder never mixes two runs. resume() in the run's own folder from a checkpoint older than
  // its latest is refused too unless this is set; then the run is rewound: the later
  // checkpoints and metrics are removed.
  bool replace_existing_run = false;
  // A diverged run skips every step: after this many consecutive skipped steps the run stops
  // with an Error (its checkpoints stay as they were). 0: never stop.
  std::int64_t max_skipped_steps = 20;
  // Set from outside (a signal handler): the steps under way are finished (one, or two with
  // step_overlap), a checkpoint saved (when there is an out_dir) and the run returns with
  // TrainResult::stopped.
  const std::atomic<bool>* stop = nullptr;
  StepOverlap step_overlap = StepOverlap::automatic;
  // After every save, the step-N checkpoints beyond the keep_last with the highest steps are
  // removed (never the one `latest` names; prune_checkpoints in checkpoint.h). 0: keep all.
  std::int64_t keep_last = 0;
  // Also save once this many minutes of wall time have passed since the last save (or since the
  // run started), whatever save_every says: a long run loses at most this much to a crash. 0: off.
  double save_every_minutes = 0;
  // The build's commit, written into every metrics.jsonl line ("unknown" when empty). The CLI
  // knows it from the build; the trainer does not.
  std::string commit;
  // Also write the metrics as TensorBoard events, to a new file in out_dir/tensorboard/
  // (docs/run-tracking.md). Needs out_dir.
  bool tensorboard = false;
  // Quantization diagnostics (train/diagnostics.h, docs/diagnostics.md): at every step whose
  // number is a multiple of this, measure every quantized GEMM on the step's first micro-batch
  // and write a {"kind": "diagnostics"} line to out_dir/metrics.jsonl after the step's line. The
  // run is the same bits with and without. Needs out_dir. 0: off.
  std::int64_t diagnostics_every = 0;
  // The diagnostics measure activations and their gradients on the micro-batch's first this-many
  // tokens (train/diagnostics.h): 0 (all) or a multiple of 128.
  std::int64_t diagnostics_tokens = 1024;
  // A data-parallel run (docs/multi-gpu.md): this process is one rank of several, which meet at
  // the environment's rendezvous. The step's micro-batches (grad_accum, a multiple of the world
  // size) are shared out among the ranks, the optimizer state is sharded, and only rank 0 logs,
  // writes metrics and saves checkpoints (the same checkpoints as a one-process run, resumable
  // on any number of ranks). Unset: a plain one-process run.
  std::optional<DistEnvironment> distributed;
};

// The run folder `out_dir` as train() would find it: throws Error if it is a file, or if it
// already holds a run and replace_existing_run is not set. For callers that start several runs
// (compare) and must refuse before the first one starts.
void check_run_folder(const std::string& out_dir, const RunControl& control);

// Runs a training run. Throws Error on bad configuration or data before anything is written.
TrainResult train(const TrainConfig& config, const TrainCallbacks& callbacks = {}, const RunControl& control = {});

// What may change when a run is resumed; everything else comes from the checkpoint, so the
// run continues bitwise as if it had never stopped (a different step count changes the
// learning-rate schedule, and is reported).
// Each one given and different from the checkpoint's is applied and logged.
struct ResumeOptions {
  std::optional<std::int64_t> steps;
  std::optional<std::string> out_dir;  // default: the run folder the checkpoint belongs to
  std::optional<std::int64_t> save_every;
  std::optional<std::int64_t> eval_every;
  std::optional<std::int64_t> eval_batches;
  std::optional<std::int64_t> final_eval_batches;
  std::optional<std::string> device;  // checkpoints are the same on either backend
};

// Continues from a checkpoint folder or a run folder (its latest checkpoint).
TrainResult resume(const std::string& checkpoint, const ResumeOptions& options = {}, const TrainCallbacks& callbacks = {},
                   const RunControl& control = {});

}  // namespace quartet

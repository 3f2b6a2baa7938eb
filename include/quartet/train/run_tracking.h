// What the trainer records about a run besides its checkpoints (docs/run-tracking.md): the
// clock readings of metrics.jsonl and the TensorBoard scalars of each step.
#pragma once

#include <filesystem>

#include "quartet/train/trainer.h"
#include "quartet/util/tensorboard_events.h"

namespace quartet {

// The system clock in Unix seconds (the wall time of metrics.jsonl and of TensorBoard events).
double unix_seconds_now();

// The folder of a run's TensorBoard events: <out_dir>/tensorboard.
std::filesystem::path tensorboard_folder(const std::filesystem::path& out_dir);

// The step's metrics as one TensorBoard event, tagged train/loss, train/lr, train/grad_norm,
// train/tokens_per_s, train/skipped_steps and, when the step evaluated, val/loss and val/bpb.
TensorBoardEvent tensorboard_event(const StepMetrics& m);

}  // namespace quartet

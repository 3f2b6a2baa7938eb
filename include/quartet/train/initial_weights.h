// `quartet train --init-from CHECKPOINT`: a new run that starts from a trained model's weights
// (not its optimizer state, schedule or data position), under any recipe: a BF16 model trained on
// in 4 bits, or a 4-bit run finished in BF16.
#pragma once

#include <filesystem>
#include <functional>
#include <string>

#include "quartet/backend/backend.h"
#include "quartet/nn/llama.h"

namespace quartet {

// The checkpoint folder `from` names (a checkpoint, or a run folder: its latest), as an absolute
// path without links: what a run records, resolved once so that every rank and every recipe of a
// comparison reads the same step. Throws Error when it is missing, or when it lies inside
// `out_dir` (the folder the run writes, which --force clears: the source would be lost).
std::filesystem::path resolve_initial_checkpoint(const std::string& from, const std::string& out_dir);

// Loads the weights of `from` (a checkpoint folder, or a run folder: its latest checkpoint) into
// `model`, a fresh model of shape `config` reading `tokenizer` tokens. Throws Error naming the
// checkpoint and what differs when its model has another shape or reads other tokens, or when it
// is missing or corrupt. Returns the checkpoint folder it read; says what it loaded through `log`.
std::filesystem::path load_initial_weights(const std::string& from, Backend& backend, LlamaModel& model,
                                           const LlamaConfig& config, const std::string& tokenizer,
                                           const std::function<void(const std::string&)>& log);

}  // namespace quartet

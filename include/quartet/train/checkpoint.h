// Checkpoints: a folder <run>/checkpoints/step-NNNNNN/ holding
//   model.safetensors      FP32 master weights (Hugging Face names; fused qkv/gate_up)
//   optimizer.safetensors  AdamW moments ("<name>.exp_avg", "<name>.exp_avg_sq")
//   config.json            the model in Hugging Face LlamaConfig terms
//   state.json             training config, step, tokens, skipped steps, data cursor
// written into a temporary folder, every file synced, then renamed into place; then
// <run>/checkpoints/latest names it. A crash never leaves a checkpoint that looks valid but
// is not, and an older checkpoint is never touched.
#pragma once

#include <filesystem>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "quartet/backend/backend.h"
#include "quartet/nn/llama.h"

namespace quartet {

struct AdamState {
  std::vector<Tensor> m, v;  // one per model parameter, same order
};

nlohmann::json llama_config_to_hf_json(const LlamaConfig& config);
LlamaConfig llama_config_from_hf_json(const nlohmann::json& j, const std::string& origin);

// Writes the checkpoint of `step` under run_dir/checkpoints; returns its folder.
std::filesystem::path save_checkpoint(const std::filesystem::path& run_dir, std::int64_t step, Backend& backend,
                                      LlamaModel& model, const AdamState& adam, const nlohmann::json& state);

// A checkpoint folder, or a run folder (then its latest checkpoint). Throws Error if none.
std::filesystem::path resolve_checkpoint(const std::filesystem::path& path);

// The step-N checkpoint folders of run_dir/checkpoints, by ascending step: real folders named
// step-<digits> only (not symlinks, temporaries or other files). Empty when there are none.
std::vector<std::pair<std::uint64_t, std::filesystem::path>> checkpoint_folders(const std::filesystem::path& run_dir);

// Removes the step-N checkpoint folders of run_dir/checkpoints beyond the `keep` with the
// highest steps, never the one `latest` names (a run resumed from an older checkpoint keeps
// its own latest). Only real folders named step-<digits> are touched: symlinks, temporaries and
// other files stay. Returns the folders removed; keep 0 removes nothing.
std::vector<std::filesystem::path> prune_checkpoints(const std::filesystem::path& run_dir, std::int64_t keep);

// state.json of a checkpoint (validated for format and version).
nlohmann::json read_checkpoint_state(const std::filesystem::path& checkpoint);

// Loads the weights (and, if adam is given, the moments) into a model built with the
// checkpoint's configuration; every tensor is checked for presence, dtype and shape.
void load_checkpoint_tensors(const std::filesystem::path& checkpoint, Backend& backend, LlamaModel& model,
                             AdamState* adam);

}  // namespace quartet

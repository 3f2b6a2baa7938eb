#include "cli/train_summary.h"

#include <filesystem>

namespace quartet::cli {

namespace {

nlohmann::json path_or_null(const std::string& path) { return path.empty() ? nlohmann::json() : nlohmann::json(path); }

}  // namespace

nlohmann::json train_summary(const TrainResult& r, const SummaryContext& c) {
  nlohmann::json j;
  const StepMetrics* last = r.history.empty() ? nullptr : &r.history.back();
  j["steps"] = last ? last->step : r.start_step;
  j["total_steps"] = c.total_steps;
  j["start_step"] = r.start_step;
  j["tokens"] = last ? nlohmann::json(last->tokens) : nlohmann::json();
  j["train_loss"] = last ? nlohmann::json(last->loss) : nlohmann::json();
  // The latest evaluation: at the last step of a finished run it is the final one.
  const StepMetrics* eval = nullptr;
  for (const StepMetrics& m : r.history) {
    if (m.val_loss) eval = &m;
  }
  j["val_loss"] = eval ? nlohmann::json(*eval->val_loss) : nlohmann::json();
  j["val_bpb"] = eval && eval->val_bpb ? nlohmann::json(*eval->val_bpb) : nlohmann::json();
  j["val_step"] = eval ? nlohmann::json(eval->step) : nlohmann::json();
  j["skipped_steps"] = r.skipped_steps;
  j["tokens_per_s"] = r.tokens_per_second > 0 ? nlohmann::json(r.tokens_per_second) : nlohmann::json();
  j["wall_s"] = r.seconds;
  j["elapsed_s"] = r.elapsed_seconds;
  j["stopped"] = r.stopped;
  j["out"] = path_or_null(c.out_dir);
  j["metrics"] = c.out_dir.empty() ? nlohmann::json() : nlohmann::json((std::filesystem::path(c.out_dir) / "metrics.jsonl").string());
  j["checkpoint"] = path_or_null(r.last_checkpoint);
  j["init_from"] = path_or_null(r.init_from);
  j["tensorboard"] = path_or_null(r.tensorboard_file);
  j["commit"] = c.commit;
  j["sample"] = c.sample_requested ? nlohmann::json(c.sample) : nlohmann::json();
  return j;
}

}  // namespace quartet::cli

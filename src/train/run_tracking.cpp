#include "quartet/train/run_tracking.h"

#include <chrono>

namespace quartet {

double unix_seconds_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::filesystem::path tensorboard_folder(const std::filesystem::path& out_dir) { return out_dir / "tensorboard"; }

TensorBoardEvent tensorboard_event(const StepMetrics& m) {
  TensorBoardEvent e;
  e.wall_time = m.unix_time;
  e.step = m.step;
  const auto add = [&](const char* tag, double v) { e.scalars.push_back({tag, static_cast<float>(v)}); };
  add("train/loss", m.loss);
  add("train/lr", m.lr);
  add("train/grad_norm", m.grad_norm);
  add("train/tokens_per_s", m.tokens_per_second);
  add("train/skipped_steps", static_cast<double>(m.skipped));
  if (m.val_loss) add("val/loss", *m.val_loss);
  if (m.val_bpb) add("val/bpb", *m.val_bpb);
  return e;
}

}  // namespace quartet

// AdamW over the model's flat parameter buffers (FlatParameters): one Backend::adamw_step per
// optimizer step, with global-norm clipping and the skip decision on the device.
#pragma once

#include "quartet/backend/backend.h"
#include "quartet/nn/llama.h"
#include "quartet/train/checkpoint.h"

namespace quartet {

// What a training step calls after the micro-batches' backward passes: AdamW on one process,
// ShardedAdamW (sharded_optimizer.h) across the ranks of a data-parallel run.
class StepOptimizer {
 public:
  virtual ~StepOptimizer() = default;
  // Queues the step: reads status[kStepLoss], writes the other status slots (backend.h).
  virtual void step(const AdamWStep& hyper, Tensor& status) = 0;
  // What the step's last backward pass tells when gradients are complete (a data-parallel
  // optimizer starts reducing them then); nullptr: nothing to do before step().
  virtual GradientsReady* gradients_ready() { return nullptr; }
};

class AdamW final : public StepOptimizer {
 public:
  // Zero moments, one flat buffer each, the size of the model's parameters.
  AdamW(Backend& backend, LlamaModel& model);
  AdamW(const AdamW&) = delete;
  AdamW& operator=(const AdamW&) = delete;

  // Views of the moments per parameter (parameters() order), for checkpoints.
  AdamState& state() { return state_; }
  const AdamState& state() const { return state_; }

  void step(const AdamWStep& hyper, Tensor& status) override;

 private:
  Backend& backend_;
  LlamaModel& model_;
  Tensor m_, v_;
  AdamState state_;
};

}  // namespace quartet

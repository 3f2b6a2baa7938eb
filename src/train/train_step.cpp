#include "quartet/train/train_step.h"

#include <fmt/format.h>

#include <cmath>

#include "quartet/error.h"

namespace quartet {

TrainStep::TrainStep(Backend& backend, LlamaModel& model, StepOptimizer& optimizer, std::int64_t batch, std::int64_t seq)
    : backend_(backend), model_(model), optimizer_(optimizer), batch_(batch), seq_(seq) {
  tokens_ = backend.empty({batch * seq}, DType::i32);
  targets_ = backend.empty({batch * seq}, DType::i32);
  for (Slot& slot : slots_) {
    slot.status = backend.zeros({kStepSlots}, DType::f64);
    slot.read = backend.make_queued_read(static_cast<std::int64_t>(slot.status.bytes()));
  }
  for (Marks& m : marks_) {
    m.start = backend.make_device_mark();
    m.end = backend.make_device_mark();
  }
}

void TrainStep::launch(std::int64_t step, const std::vector<Batch>& micro_batches, double grad_scale,
                       const AdamWStep& hyper, LinearProbe* probe, std::int64_t first, std::int64_t total) {
  if (in_flight() >= kMaxInFlight) {
    throw Error(fmt::format("TrainStep: step {} launched with {} steps in flight (at most {})", step, in_flight(),
                            kMaxInFlight));
  }
  Slot& slot = slots_[static_cast<std::size_t>(launched_ % kMaxInFlight)];
  Marks& marks = marks_[static_cast<std::size_t>(launched_ % (kMaxInFlight + 1))];
  marks.follows_previous = in_flight() > 0;
  marks.started_at = std::chrono::steady_clock::now();
  marks.start->record();
  slot.failure.clear();
  backend_.fill(slot.status, 0.0);
  Tensor loss_sum = slot.status.view(kStepLoss, {1});
  model_.zero_grads();
  const auto n = static_cast<std::int64_t>(micro_batches.size());
  const std::int64_t per_step = total > 0 ? total : n;  // micro-batches per step on all ranks
  for (std::int64_t k = 0; k < n; ++k) {
    const Batch& b = micro_batches[static_cast<std::size_t>(k)];
    // Uploads are queued behind the previous micro-batch's kernels (one stream), so one pair of
    // device buffers serves every micro-batch of every step in flight.
    backend_.upload_tokens(tokens_, b.inputs);
    backend_.upload_tokens(targets_, b.targets);
    try {
      // The last micro-batch completes the step's gradients: the optimizer may start reducing
      // them while its backward pass runs on.
      model_.forward_backward(tokens_, targets_, batch_, seq_, grad_scale, static_cast<std::uint32_t>(step * per_step + first + k + 1),
                              loss_sum, k == 0 ? probe : nullptr, k + 1 == n ? optimizer_.gradients_ready() : nullptr);
    } catch (const NonFiniteError& e) {
      slot.failure = e.what();  // a quantizer met an overflowed activation or gradient
      backend_.fill(loss_sum, NAN);
      break;
    }
  }
  optimizer_.step(hyper, slot.status);
  // finish() waits for this read only, not for a step queued after it.
  slot.read->queue(slot.status);
  marks.end->record();
  ++launched_;
}

StepOutcome TrainStep::finish() {
  if (in_flight() == 0) throw Error("TrainStep: finish() with no step launched");
  Slot& slot = slots_[static_cast<std::size_t>(finished_ % kMaxInFlight)];
  Marks& marks = marks_[static_cast<std::size_t>(finished_ % (kMaxInFlight + 1))];
  const Marks& previous = marks_[static_cast<std::size_t>((finished_ + kMaxInFlight) % (kMaxInFlight + 1))];
  ++finished_;
  const std::vector<double> s = slot.read->wait();
  StepOutcome out;
  out.device_seconds = marks.end->seconds_since(marks.follows_previous ? *previous.end : *marks.start);
  out.follows_previous = marks.follows_previous;
  out.started_at = marks.started_at;
  out.loss_sum = s[kStepLoss];
  out.grad_norm = s[kStepGradNorm];
  out.applied = s[kStepApplied] != 0;
  if (out.applied) return out;
  out.why_skipped = slot.failure;
  // A device's record of a non-finite quantizer input went into this step's status.
  if (out.why_skipped.empty() && s[kStepNonFiniteInput] != 0) {
    out.why_skipped = backend_.describe_non_finite_input(s[kStepNonFiniteKey]);
  }
  if (out.why_skipped.empty()) {
    try {
      backend_.raise_pending_errors();  // Error (bad data) propagates; NonFiniteError says where
    } catch (const NonFiniteError& e) {
      out.why_skipped = e.what();
    }
  }
  if (out.why_skipped.empty()) {
    out.why_skipped = fmt::format("non-finite {} (loss {}, gradient norm {})",
                                  std::isfinite(out.loss_sum) ? "gradient" : "loss", out.loss_sum, out.grad_norm);
  }
  return out;
}

}  // namespace quartet

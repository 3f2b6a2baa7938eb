// One training step: the micro-batches' forward and backward passes and the optimizer step, all
// queued on the backend, then one read of the step's status (loss, gradient norm, whether the
// update was applied): the step's only host synchronisation. Two steps may be in flight: the
// next one queued before the last one's status is read, so that the device never waits for the
// host between steps (each has its own status slot; the device runs them in order).
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "quartet/backend/backend.h"
#include "quartet/nn/llama.h"
#include "quartet/train/batch_prefetcher.h"
#include "quartet/train/optimizer.h"

namespace quartet {

struct StepOutcome {
  double loss_sum = 0;   // summed over the step's tokens (NaN when a micro-batch failed)
  double grad_norm = 0;  // before clipping
  bool applied = false;
  std::string why_skipped;  // when not applied: the non-finite input, loss or gradient
  // How long the step took, for throughput. The host runs ahead of the device, so the time
  // between two finish() calls can be far from it (a finish() that waited behind the next
  // step's launch comes late): the device's clock (DeviceMark) says instead. A step launched
  // while the one before it was in flight (follows_previous) took the device's time from that
  // step's end to its own. Any other step took the device's time from its own start (the
  // device was idle then: the host had waited for the step before) to its end, and the host
  // started it at `started_at`: what the host did before that (an evaluation, a save) is not
  // the step's.
  double device_seconds = 0;
  bool follows_previous = false;
  std::chrono::steady_clock::time_point started_at{};
};

class TrainStep {
 public:
  TrainStep(Backend& backend, LlamaModel& model, StepOptimizer& optimizer, std::int64_t batch, std::int64_t seq);

  // Queues step `step` (0-based; its micro-batch k draws random call step * n + k + 1, with n
  // the number of micro-batches) with the gradient of the summed loss times grad_scale. A probe,
  // if given, watches the linear layers of the first micro-batch (the step is the same bits).
  // In a data-parallel run a rank runs micro-batches first .. first + size - 1 of the step's
  // total (dist/sharding.h): they draw the calls they draw on one process, so the ranks' random
  // bits are independent of one another and the same on any number of ranks.
  void launch(std::int64_t step, const std::vector<Batch>& micro_batches, double grad_scale, const AdamWStep& hyper,
              LinearProbe* probe = nullptr, std::int64_t first = 0, std::int64_t total = 0);
  // Throws Error when kMaxInFlight steps are already launched and not finished.
  // Waits for the oldest launched step and reads its outcome. An error found in the data (a
  // token or target outside the vocabulary) is thrown as Error.
  StepOutcome finish();
  // Steps launched and not yet finished.
  std::int64_t in_flight() const { return launched_ - finished_; }

  static constexpr std::int64_t kMaxInFlight = 2;

 private:
  struct Slot {
    Tensor status;
    std::unique_ptr<QueuedRead> read;  // the status, queued behind the step's work
    std::string failure;  // a synchronous backend's NonFiniteError in the step
  };
  Backend& backend_;
  LlamaModel& model_;
  StepOptimizer& optimizer_;
  std::int64_t batch_, seq_;
  Tensor tokens_, targets_;
  std::array<Slot, kMaxInFlight> slots_;
  // The device's marks of a step's start and end. One set more than the steps in flight: a
  // step's time may be counted from the end of the step before it, whose set must still hold
  // when the step after it has been launched.
  struct Marks {
    std::unique_ptr<DeviceMark> start, end;
    bool follows_previous = false;  // launched while the step before it was in flight
    std::chrono::steady_clock::time_point started_at{};
  };
  std::array<Marks, kMaxInFlight + 1> marks_;
  std::int64_t launched_ = 0, finished_ = 0;
};

}  // namespace quartet

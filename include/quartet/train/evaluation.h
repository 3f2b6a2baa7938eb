// Evaluation on the validation split: mean loss per token and bits per byte.
#pragma once

#include <cstdint>

#include "quartet/backend/backend.h"
#include "quartet/data/dataset.h"
#include "quartet/data/tokenizer.h"
#include "quartet/dist/communicator.h"
#include "quartet/nn/llama.h"

namespace quartet {

struct Evaluation {
  double loss = 0;  // nats per token; NaN for a diverged model
  double bpb = 0;   // bits per byte
};

// The first `max_batches` windows of batch x seq tokens of the validation split (fewer if it is
// shorter). Each window's loss is kept on the device and read once at the end, then added in
// window order on the host: the same sum as one device accumulator, bit for bit.
//
// With a communicator (a data-parallel run) the ranks share the windows: rank r runs windows
// r, r + N, r + 2N, ... and the per-window losses are summed over the ranks (each window's
// loss comes from one rank, the others add zeros: exact), so every rank gets the one-process
// result bit for bit in 1/N of the time. Every rank must call it (a collective).
Evaluation evaluate(Backend& backend, LlamaModel& model, const Dataset& data, const Tokenizer& tokenizer,
                    std::int64_t batch, std::int64_t seq, std::int64_t max_batches, Communicator* comm = nullptr);

}  // namespace quartet

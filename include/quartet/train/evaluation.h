// Evaluation on the validation split: mean loss per token and bits per byte.
#pragma once

#include <cstdint>

#include "quartet/backend/backend.h"
#include "quartet/data/dataset.h"
#include "quartet/data/tokenizer.h"
#include "quartet/nn/llama.h"

namespace quartet {

struct Evaluation {
  double loss = 0;  // nats per token; NaN for a diverged model
  double bpb = 0;   // bits per byte
};

// The first `max_batches` windows of batch x seq tokens of the validation split (fewer if it is
// shorter). The loss is summed on the device and read once at the end.
Evaluation evaluate(Backend& backend, LlamaModel& model, const Dataset& data, const Tokenizer& tokenizer,
                    std::int64_t batch, std::int64_t seq, std::int64_t max_batches);

}  // namespace quartet

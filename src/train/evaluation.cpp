#include "quartet/train/evaluation.h"

#include <cmath>
#include <vector>

#include "quartet/error.h"

namespace quartet {

Evaluation evaluate(Backend& backend, LlamaModel& model, const Dataset& data, const Tokenizer& tokenizer,
                    std::int64_t batch, std::int64_t seq, std::int64_t max_batches) {
  BatchLoader loader(data.val, batch, seq, "validation");
  const std::int64_t per_batch = batch * seq;
  const std::int64_t batches =
      std::min<std::int64_t>(max_batches, (static_cast<std::int64_t>(data.val.size()) - 1) / per_batch);
  std::vector<std::int32_t> inputs, targets;
  Tensor tok = backend.empty({per_batch}, DType::i32), tgt = backend.empty({per_batch}, DType::i32);
  Tensor loss_sum = backend.zeros({1}, DType::f64);
  double bytes = 0;
  std::int64_t tokens = 0;
  bool non_finite = false;
  for (std::int64_t b = 0; b < batches && !non_finite; ++b) {
    loader.next(inputs, targets);
    backend.upload_tokens(tok, inputs);
    backend.upload_tokens(tgt, targets);
    try {
      model.forward_loss(tok, tgt, batch, seq, loss_sum);
    } catch (const NonFiniteError&) {
      non_finite = true;  // a synchronous backend's quantizer met a diverged activation
    }
    for (std::int32_t t : targets) bytes += static_cast<double>(tokenizer.token_bytes(t));
    tokens += per_batch;
  }
  const double nats = backend.download(loss_sum)[0];
  try {
    backend.raise_pending_errors();  // clears a non-finite record, which would skip the next step
  } catch (const NonFiniteError&) {
    non_finite = true;
  }
  if (non_finite || !std::isfinite(nats)) return Evaluation{NAN, NAN};  // a diverged model: report it, do not stop
  return Evaluation{nats / static_cast<double>(tokens), bytes > 0 ? nats / std::log(2.0) / bytes : 0.0};
}

}  // namespace quartet

#include "quartet/train/evaluation.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "quartet/error.h"

namespace quartet {

Evaluation evaluate(Backend& backend, LlamaModel& model, const Dataset& data, const Tokenizer& tokenizer,
                    std::int64_t batch, std::int64_t seq, std::int64_t max_batches, Communicator* comm) {
  BatchLoader loader(data.val, batch, seq, "validation");
  const std::int64_t per_batch = batch * seq;
  const std::int64_t batches = std::max<std::int64_t>(
      0, std::min<std::int64_t>(max_batches, (static_cast<std::int64_t>(data.val.size()) - 1) / per_batch));
  const int rank = comm ? comm->rank() : 0, world = comm ? comm->world_size() : 1;
  std::vector<std::int32_t> inputs, targets;
  Tensor tok = backend.empty({per_batch}, DType::i32), tgt = backend.empty({per_batch}, DType::i32);
  // One slot per window, zero where another rank runs it.
  Tensor losses = backend.zeros({std::max<std::int64_t>(batches, 1)}, DType::f64);
  double bytes = 0;
  bool non_finite = false;
  for (std::int64_t b = 0; b < batches; ++b) {
    loader.next(inputs, targets);  // every rank reads every window: the bytes are counted everywhere
    for (std::int32_t t : targets) bytes += static_cast<double>(tokenizer.token_bytes(t));
    if (b % world != rank || non_finite) continue;
    backend.upload_tokens(tok, inputs);
    backend.upload_tokens(tgt, targets);
    Tensor slot = losses.view(b, {1});
    try {
      model.forward_loss(tok, tgt, batch, seq, slot);
    } catch (const NonFiniteError&) {
      non_finite = true;  // a synchronous backend's quantizer met a diverged activation
    }
  }
  if (comm && batches > 0) comm->all_reduce_sum(losses.raw(), static_cast<std::size_t>(batches), CommType::f64);
  const std::vector<double> per_window = backend.download(losses);
  try {
    backend.raise_pending_errors();  // clears a non-finite record, which would skip the next step
  } catch (const NonFiniteError&) {
    non_finite = true;
  }
  if (comm) {  // a rank's diverged window makes every rank's result NaN
    double flag = non_finite ? 1.0 : 0.0;
    comm->all_reduce_sum_host(&flag, 1);
    non_finite = flag > 0;
  }
  double nats = 0;
  for (std::int64_t b = 0; b < batches; ++b) nats += per_window[static_cast<std::size_t>(b)];
  if (non_finite || !std::isfinite(nats)) return Evaluation{NAN, NAN};  // a diverged model: report it, do not stop
  const double tokens = static_cast<double>(batches * per_batch);
  return Evaluation{nats / tokens, bytes > 0 ? nats / std::log(2.0) / bytes : 0.0};
}

}  // namespace quartet

#include "quartet/nn/generate.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "quartet/error.h"
#include "quartet/numerics/philox.h"

namespace quartet {

std::vector<std::int32_t> generate(Backend& backend, LlamaModel& model, const std::vector<std::int32_t>& prompt,
                                   const SamplingOptions& o) {
  if (prompt.empty()) throw Error("generate: the prompt is empty (start with <|endoftext|> for an unconditional sample)");
  if (o.max_tokens < 0 || !(o.temperature >= 0) || o.top_k < 0) {
    throw Error(fmt::format("generate: invalid sampling options (tokens {}, temperature {}, top-k {})", o.max_tokens,
                            o.temperature, o.top_k));
  }
  const std::int64_t vocab = model.config().vocab_size, window = model.config().max_seq_len;
  std::vector<std::int32_t> tokens = prompt, out;
  const RandomContext rng{o.seed, 0x5A3D1E00u, 0};
  for (std::int64_t i = 0; i < o.max_tokens; ++i) {
    const std::int64_t t = std::min<std::int64_t>(static_cast<std::int64_t>(tokens.size()), window);
    const std::vector<std::int32_t> context(tokens.end() - t, tokens.end());
    Tensor tok = backend.empty({t}, DType::i32);
    backend.upload_tokens(tok, context);
    const Tensor last = model.forward_logits(tok, 1, t);
    const std::vector<double> all = backend.download(last);
    const auto row = all.end() - last.dim(1);  // the last position's row: vocabulary, then padding
    std::vector<double> logits(row, row + vocab);
    std::int32_t next = 0;
    if (o.temperature == 0) {
      next = static_cast<std::int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    } else {
      std::vector<std::int32_t> order(static_cast<std::size_t>(vocab));
      std::iota(order.begin(), order.end(), 0);
      const auto k = static_cast<std::size_t>(o.top_k > 0 ? std::min(o.top_k, vocab) : vocab);
      std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(k), order.end(),
                        [&](std::int32_t a, std::int32_t b) { return logits[a] > logits[b]; });
      std::vector<double> p(k);
      const double top = logits[order[0]];
      double sum = 0;
      for (std::size_t j = 0; j < k; ++j) sum += p[j] = std::exp((logits[order[j]] - top) / o.temperature);
      const PhiloxWords w = philox_block(rng, 0, static_cast<std::uint32_t>(i));
      double u = (static_cast<double>(w.x) + 0.5) * 0x1p-32 * sum;
      next = order[k - 1];
      for (std::size_t j = 0; j < k; ++j) {
        if ((u -= p[j]) <= 0) {
          next = order[j];
          break;
        }
      }
    }
    tokens.push_back(next);
    out.push_back(next);
    if (next == o.stop_token) break;
  }
  return out;
}

}  // namespace quartet

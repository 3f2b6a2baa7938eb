#include "quartet/train/initial_weights.h"

#include <fmt/format.h>

#include <algorithm>

#include "quartet/error.h"
#include "quartet/train/checkpoint.h"
#include "quartet/train/trained_model.h"

namespace quartet {

namespace {

// The dimensions that decide the weights' shapes, as a log and error message show them.
std::string shape_text(const LlamaConfig& c) {
  return fmt::format("{} layers, d {}, {} heads ({} kv), ffn {}, vocab {}", c.n_layers, c.d_model, c.n_heads,
                     c.n_kv_heads, c.ffn(), c.vocab_size);
}

}  // namespace

std::filesystem::path resolve_initial_checkpoint(const std::string& from, const std::string& out_dir) {
  const std::filesystem::path dir = std::filesystem::weakly_canonical(std::filesystem::absolute(resolve_checkpoint(from)));
  if (!out_dir.empty()) {
    const std::filesystem::path out = std::filesystem::weakly_canonical(std::filesystem::absolute(out_dir));
    const auto [o, d] = std::mismatch(out.begin(), out.end(), dir.begin(), dir.end());
    if (o == out.end()) {
      throw Error(fmt::format("--init-from {}: the checkpoint lies inside --out {}, the folder this run writes (and "
                              "--force clears); give the run another --out",
                              from, out_dir));
    }
  }
  return dir;
}

std::filesystem::path load_initial_weights(const std::string& from, Backend& backend, LlamaModel& model,
                                           const LlamaConfig& config, const std::string& tokenizer,
                                           const std::function<void(const std::string&)>& log) {
  const TrainedModel trained = read_trained_model(from);
  const std::filesystem::path& dir = trained.dir;
  if (trained.tokenizer_name != tokenizer) {
    throw Error(fmt::format("--init-from {}: its model reads '{}' tokens; this run's data is tokenized with '{}'",
                            dir.string(), trained.tokenizer_name, tokenizer));
  }
  const LlamaConfig& theirs = trained.model;
  if (theirs.vocab_size != config.vocab_size || theirs.d_model != config.d_model || theirs.n_layers != config.n_layers ||
      theirs.n_heads != config.n_heads || theirs.n_kv_heads != config.n_kv_heads || theirs.ffn() != config.ffn()) {
    throw Error(fmt::format("--init-from {}: its model ({}: {}) is not this run's ({}: {}); give the same --model and "
                            "overrides",
                            dir.string(), theirs.size, shape_text(theirs), config.size, shape_text(config)));
  }
  load_checkpoint_tensors(dir, backend, model, nullptr);
  if (log) {
    log(fmt::format("initialised from {}: the weights of step {} of a {} run (not its optimizer state, schedule or data "
                    "position)",
                    dir.string(), trained.step, trained.config.recipe));
  }
  return dir;
}

}  // namespace quartet

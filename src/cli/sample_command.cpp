// `quartet sample`: generate text from a checkpoint.
#include <fmt/format.h>

#include <cstdio>
#include <memory>

#include "cli/commands.h"
#include "cli/option_checks.h"
#include "quartet/data/tokenizer.h"
#include "quartet/error.h"
#include "quartet/util/text.h"
#include "quartet/nn/generate.h"
#include "quartet/train/checkpoint.h"
#include "quartet/train/devices.h"
#include "quartet/train/trainer.h"

namespace quartet::cli {

namespace {

struct SampleOptions {
  std::string checkpoint;
  std::string prompt;
  SamplingOptions sampling;
  int count = 1;
  std::string device = "auto";
  bool no_cache = false;
};

// One line on stderr per sample (stdout keeps only the text): the prompt's forward pass and
// the following tokens timed separately, since they cost differently with a cache.
void print_speed(const GenerationStats& s) {
  std::string line = fmt::format("prefill: {} tokens in {:.3f} s ({:.1f} tokens/s)", s.prefill_tokens,
                                 s.prefill_seconds, s.prefill_tokens_per_second());
  if (s.decode_steps > 0) {
    line += fmt::format("; decode: {} tokens in {:.3f} s ({:.1f} tokens/s)", s.decode_steps, s.decode_seconds,
                        s.decode_tokens_per_second());
  }
  line += s.cached ? "; key/value cache" : "; recomputing the context";
  if (s.cached && s.recomputed_steps > 0) {
    line += fmt::format(", {} steps past the window recomputed", s.recomputed_steps);
  }
  fmt::print(stderr, "{}\n", line);
}

}  // namespace

Command add_sample_command(CLI::App& parent) {
  auto o = std::make_shared<SampleOptions>();
  CLI::App* app = parent.add_subcommand("sample", "Generate text from a checkpoint (or a run folder: its latest checkpoint)");
  app->add_option("checkpoint", o->checkpoint, "checkpoint folder or run folder")->required();
  app->add_option("--prompt", o->prompt, "text to continue (default: start of a new document)");
  app->add_option("--tokens", o->sampling.max_tokens, "tokens to generate")
      ->capture_default_str()
      ->check(integer_in(1, kMaxInt32));
  app->add_option("--temperature", o->sampling.temperature, "0 for greedy decoding")
      ->capture_default_str()
      ->check(number_above(0, true));
  app->add_option("--top-k", o->sampling.top_k, "sample among the k most likely tokens (0: all)")
      ->capture_default_str()
      ->check(integer_in(0, kMaxInt32));
  app->add_option("--seed", o->sampling.seed, "seed of the sampling")->capture_default_str()->check(unsigned_integer());
  app->add_option("--count", o->count, "number of samples")->capture_default_str()->check(integer_in(1, kMaxInt32));
  app->add_option("--device", o->device, "auto (the GPU if there is one), cpu or cuda")
      ->capture_default_str()
      ->check(name_one_of({"auto", "cpu", "cuda"}));
  app->add_flag("--no-cache", o->no_cache, "recompute the whole context for every token instead of keeping a key/value cache "
                                            "(the reference: the same tokens, slower)");

  Command command;
  command.app = app;
  command.run = [o]() {
    if (o->count < 1) throw Error(fmt::format("--count must be at least 1, got {}", o->count));
    const auto dir = resolve_checkpoint(o->checkpoint);
    const nlohmann::json state = read_checkpoint_state(dir);
    const TrainConfig c = TrainConfig::from_json(state.at("config"));
    const std::unique_ptr<Tokenizer> tokenizer = make_tokenizer(state.at("tokenizer").get<std::string>());
    if (o->sampling.top_k > tokenizer->vocab_size()) {
      throw Error(fmt::format("--top-k {} is more than the model's vocabulary of {} tokens (0 samples among all of them)",
                              o->sampling.top_k, tokenizer->vocab_size()));
    }
    auto backend = make_backend(o->device);
    LlamaModel model(*backend, model_config(c, tokenizer->vocab_size()), make_recipe(c.recipe, c.recipe_options), c.seed);
    load_checkpoint_tensors(dir, *backend, model, nullptr);
    std::vector<std::int32_t> prompt = {tokenizer->eot()};
    const std::vector<std::int32_t> text = tokenizer->encode(o->prompt);
    prompt.insert(prompt.end(), text.begin(), text.end());
    SamplingOptions s = o->sampling;
    s.stop_token = tokenizer->eot();
    s.use_cache = !o->no_cache;
    const std::string mismatch = s.use_cache ? model.kv_cache_mismatch() : "";
    if (!mismatch.empty()) fmt::print(stderr, "sampling without a key/value cache: {}\n", mismatch);
    for (int i = 0; i < o->count; ++i) {
      if (o->count > 1) fmt::print("--- sample {} ---\n", i + 1);
      // A byte-level model can emit bytes that are not UTF-8: print them as U+FFFD.
      const Generation g = generate_timed(*backend, model, prompt, s);
      fmt::print("{}{}\n", o->prompt, sanitize_utf8(tokenizer->decode(g.tokens)));
      std::fflush(stdout);
      print_speed(g.stats);
      ++s.seed;
    }
    return 0;
  };
  return command;
}

}  // namespace quartet::cli

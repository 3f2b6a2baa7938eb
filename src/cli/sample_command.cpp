// `quartet sample`: generate text from a checkpoint.
#include <fmt/format.h>

#include <memory>

#include "cli/commands.h"
#include "cli/option_checks.h"
#include "quartet/data/tokenizer.h"
#include "quartet/error.h"
#include "quartet/util/text.h"
#include "quartet/nn/generate.h"
#include "quartet/train/checkpoint.h"
#include "quartet/train/trainer.h"

namespace quartet::cli {

namespace {

struct SampleOptions {
  std::string checkpoint;
  std::string prompt;
  SamplingOptions sampling;
  int count = 1;
};

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

  Command command;
  command.app = app;
  command.run = [o]() {
    if (o->count < 1) throw Error(fmt::format("--count must be at least 1, got {}", o->count));
    const auto dir = resolve_checkpoint(o->checkpoint);
    const nlohmann::json state = read_checkpoint_state(dir);
    const TrainConfig c = TrainConfig::from_json(state.at("config"));
    const std::unique_ptr<Tokenizer> tokenizer = make_tokenizer(state.at("tokenizer").get<std::string>());
    auto backend = make_cpu_backend();
    LlamaModel model(*backend, model_config(c, tokenizer->vocab_size()), make_recipe(c.recipe, c.recipe_options), c.seed);
    load_checkpoint_tensors(dir, *backend, model, nullptr);
    std::vector<std::int32_t> prompt = {tokenizer->eot()};
    const std::vector<std::int32_t> text = tokenizer->encode(o->prompt);
    prompt.insert(prompt.end(), text.begin(), text.end());
    SamplingOptions s = o->sampling;
    s.stop_token = tokenizer->eot();
    for (int i = 0; i < o->count; ++i) {
      if (o->count > 1) fmt::print("--- sample {} ---\n", i + 1);
      // A byte-level model can emit bytes that are not UTF-8: print them as U+FFFD.
      fmt::print("{}{}\n", o->prompt, sanitize_utf8(tokenizer->decode(generate(*backend, model, prompt, s))));
      ++s.seed;
    }
    return 0;
  };
  return command;
}

}  // namespace quartet::cli

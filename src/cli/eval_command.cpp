// `quartet eval CHECKPOINT`: a trained model's loss, perplexity and bits per byte on the
// validation split of its own data or of another corpus, through the forward pass of the recipe
// it trained with or of another (a model trained in 4 bits, evaluated in BF16, say).
#include <fmt/format.h>

#include <cmath>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>

#include "cli/commands.h"
#include "cli/option_checks.h"
#include "quartet/error.h"
#include "quartet/nn/recipe.h"
#include "quartet/train/checkpoint.h"
#include "quartet/train/devices.h"
#include "quartet/train/trained_model.h"
#include "quartet/train/evaluation.h"
#include "quartet/util/json_number.h"

namespace quartet::cli {

namespace {

struct EvalOptions {
  std::string checkpoint;
  std::string data;
  std::string recipe;  // empty: the checkpoint's, with its options
  std::int64_t batches = 0;  // 0: the run's final evaluation's (--final-eval-batches)
  std::int64_t batch = 0, seq = 0;  // 0: the checkpoint's
  std::string device = "auto";
  bool json = false;
};

}  // namespace

Command add_eval_command(CLI::App& parent) {
  auto o = std::make_shared<EvalOptions>();
  CLI::App* app = parent.add_subcommand(
      "eval", "Evaluate a checkpoint: loss, perplexity and bits per byte on a validation split (docs/eval.md)");
  app->add_option("checkpoint", o->checkpoint, "checkpoint folder or run folder (its latest checkpoint)")->required();
  app->add_option("--data", o->data,
                  "embedded:austen or a folder of shards, tokenized as the model reads (default: the checkpoint's "
                  "data); its validation split is evaluated");
  app->add_option("--recipe", o->recipe,
                  "the forward pass to evaluate with (default: the recipe the checkpoint trained with, and its "
                  "options)");
  app->add_option("--batches", o->batches,
                  "windows of --batch x --seq tokens, from the start of the split (default: as many as the run's "
                  "final evaluation)")
      ->check(integer_in(1, kMaxInt32));
  app->add_option("--batch", o->batch, "sequences per window (default: the checkpoint's)")->check(integer_in(1, kMaxInt32));
  app->add_option("--seq", o->seq, "tokens per sequence (default: the checkpoint's)")->check(integer_in(2, kMaxInt32));
  app->add_option("--device", o->device, "auto (the GPU if there is one), cpu or cuda")
      ->capture_default_str()
      ->check(name_one_of({"auto", "cpu", "cuda"}));
  app->add_flag("--json", o->json, "print one JSON object on stdout instead of the text");

  Command command;
  command.app = app;
  command.check = [o]() {
    if (!o->recipe.empty()) {
      try {
        make_recipe(o->recipe);
      } catch (const Error& e) {
        throw Error(fmt::format("--recipe: {}", e.what()));
      }
    }
  };
  command.run = [o]() {
    const TrainedModel trained = read_trained_model(o->checkpoint);
    const TrainConfig& c = trained.config;
    const Recipe trained_recipe = make_recipe(c.recipe, c.recipe_options);  // "NAME (modified)" with its options
    const Recipe recipe = o->recipe.empty() ? trained_recipe : make_recipe(o->recipe);
    const std::int64_t wanted = o->batches ? o->batches : c.final_eval_batches;
    const std::int64_t batch = o->batch ? o->batch : c.batch, seq = o->seq ? o->seq : c.seq;
    if (seq > trained.model.max_seq_len) {
      throw Error(fmt::format("--seq {} is longer than the model's maximum sequence length {}", seq,
                              trained.model.max_seq_len));
    }
    try {
      check_recipe_fits(trained.model, recipe, batch * seq);
    } catch (const Error& e) {
      throw Error(fmt::format("{} (a window: --batch {} x --seq {})", e.what(), batch, seq));
    }
    Dataset data;
    try {
      data = load_model_data(trained, o->data);
    } catch (const Error& e) {
      if (!o->data.empty()) throw;
      throw Error(fmt::format("{} (the data the checkpoint names, as the run gave it; --data names other data)",
                              e.what()));
    }
    // A window reads seq + 1 tokens per sequence's worth: its targets run one token ahead.
    const std::int64_t available = (static_cast<std::int64_t>(data.val.size()) - 1) / (batch * seq);
    if (available < 1) {
      throw Error(fmt::format("the validation split of {} ({} tokens) is shorter than one window of --batch {} x "
                              "--seq {} tokens (and one more)",
                              data.source, data.val.size(), batch, seq));
    }
    const std::int64_t batches = std::min(wanted, available);
    if (batches < wanted) {
      fmt::print(stderr, "note: the validation split of {} holds {} windows of {} x {} tokens; {} asked for more\n",
                 data.source, available, batch, seq,
                 o->batches ? fmt::format("--batches {}", wanted)
                            : fmt::format("the run's final evaluation ({} windows)", wanted));
    }

    const std::unique_ptr<Backend> backend = make_backend(o->device);
    LlamaModel model(*backend, trained.model, recipe, c.seed);
    load_checkpoint_tensors(trained.dir, *backend, model, nullptr);
    const Evaluation e = evaluate(*backend, model, data, *trained.tokenizer, batch, seq, batches);
    const double perplexity = std::exp(e.loss);

    if (o->json) {
      nlohmann::ordered_json j;
      j["checkpoint"] = trained.dir.string();
      j["step"] = trained.step;
      j["trained_recipe"] = trained_recipe.name;
      j["recipe"] = recipe.name;
      j["data"] = data.source;
      j["split"] = "validation";
      j["batch"] = batch;
      j["seq"] = seq;
      j["batches"] = batches;
      j["tokens"] = batches * batch * seq;
      j["device"] = backend->name();
      j["loss"] = number_or_null<nlohmann::ordered_json>(e.loss);
      j["perplexity"] = number_or_null<nlohmann::ordered_json>(perplexity);
      j["bpb"] = number_or_null<nlohmann::ordered_json>(e.bpb);
      fmt::print("{}\n", j.dump());
      return 0;
    }
    fmt::print("quartet eval: {} (trained with {}, step {}) on {}, validation split; {}\n", trained.dir.string(),
               trained_recipe.name, trained.step, data.source, backend->name());
    fmt::print("recipe {}{}: {} windows of {} x {} tokens ({} tokens)\n", recipe.name,
               o->recipe.empty() ? " (the checkpoint's)" : "", batches, batch, seq, batches * batch * seq);
    if (!std::isfinite(e.loss)) {
      fmt::print("val loss nan: the model's forward pass is not finite on this data (a diverged model)\n");
      return 0;
    }
    fmt::print("val loss {:.4f} | perplexity {:.2f} | {:.4f} bits per byte\n", e.loss, perplexity, e.bpb);
    return 0;
  };
  return command;
}

}  // namespace quartet::cli

// `quartet prepare`: text files (plain or gzip) -> train/val token shards in llm.c's format,
// plus dataset.json naming the tokenizer.
#include <fmt/format.h>

#include <filesystem>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/progress.h"
#include "quartet/data/dataset.h"
#include "quartet/data/shards.h"
#include "quartet/data/text_input.h"
#include "quartet/error.h"
#include "quartet/util/checked.h"
#include "quartet/util/files.h"

namespace quartet::cli {

namespace {

struct PrepareOptions {
  std::vector<std::string> inputs;
  std::string out;
  std::string tokenizer = "gpt2";
  std::string name;
  double val_fraction = 0.05;
  std::int64_t shard_tokens = 100'000'000;
  std::int64_t max_input_bytes = static_cast<std::int64_t>(kDefaultGunzipLimit);
  bool force = false;
};

void write_split(const std::filesystem::path& out, const std::string& name, const std::string& split,
                 const std::vector<std::uint16_t>& tokens, std::int64_t shard_tokens) {
  for (std::size_t begin = 0, index = 0; begin < tokens.size() || index == 0; begin += static_cast<std::size_t>(shard_tokens), ++index) {
    const std::size_t end = std::min(tokens.size(), begin + static_cast<std::size_t>(shard_tokens));
    std::vector<std::int32_t> part(tokens.begin() + static_cast<std::ptrdiff_t>(begin), tokens.begin() + static_cast<std::ptrdiff_t>(end));
    write_shard(out / fmt::format("{}_{}_{:06}.bin", name, split, index), part);
    if (end == tokens.size()) break;
  }
}

}  // namespace

Command add_prepare_command(CLI::App& parent) {
  auto o = std::make_shared<PrepareOptions>();
  CLI::App* app = parent.add_subcommand("prepare", "Tokenize text files (plain or .gz; one document each) into train/val shards");
  app->add_option("inputs", o->inputs, "text files")->required();
  app->add_option("--out", o->out, "output folder")->required();
  app->add_option("--tokenizer", o->tokenizer, "gpt2 or byte")->capture_default_str();
  app->add_option("--name", o->name, "shard name prefix (default: the output folder's name)");
  app->add_option("--val-fraction", o->val_fraction, "share of each document (its end) kept for validation")
      ->capture_default_str();
  app->add_option("--shard-tokens", o->shard_tokens, "tokens per shard file (at most 2147483647)")->capture_default_str();
  app->add_option("--max-input-bytes", o->max_input_bytes,
                  "largest size a .gz input may decompress to (a guard against gzip bombs)")
      ->capture_default_str();
  app->add_flag("--force", o->force, "replace shards already in the output folder");

  Command command;
  command.app = app;
  command.run = [o]() {
    const std::filesystem::path out(o->out);
    // A shard's header counts its tokens in an int32; checked before anything is read or removed.
    checked_range(o->shard_tokens, 1, 0x7FFFFFFF, "--shard-tokens");
    checked_range(o->max_input_bytes, 1, std::numeric_limits<std::int64_t>::max(), "--max-input-bytes");
    const std::unique_ptr<Tokenizer> tokenizer = make_tokenizer(o->tokenizer);
    // The shards are written as <out>/<name>_<split>_NNNNNN.bin: a name with a path in it would
    // put them outside --out.
    if (!o->name.empty()) check_plain_name(o->name, "--name");
    if (std::filesystem::exists(out) && !std::filesystem::is_directory(out)) {
      throw Error(fmt::format("--out {} exists and is not a folder", o->out));
    }
    if (std::filesystem::exists(out) && !o->force) {
      for (const auto& e : std::filesystem::directory_iterator(out)) {
        if (e.path().extension() == ".bin" || e.path().filename() == "dataset.json") {
          throw Error(fmt::format("{} already holds a dataset ({}); use --force to replace it", o->out,
                                  e.path().filename().string()));
        }
      }
    }
    // Read every input first: a missing or corrupt file stops the command before anything is written.
    std::vector<std::string> docs;
    ProgressLine progress("prepare");
    std::size_t bytes = 0;
    for (std::size_t i = 0; i < o->inputs.size(); ++i) {
      docs.push_back(read_text_file(o->inputs[i], static_cast<std::size_t>(o->max_input_bytes)));
      bytes += docs.back().size();
      progress.update(static_cast<long>(i + 1), static_cast<long>(o->inputs.size()), "read " + o->inputs[i]);
    }
    progress.finish();
    // Binary inputs stop the command here; empty and repeated ones are worth a word, no more.
    std::vector<TextInput> checked;
    for (std::size_t i = 0; i < docs.size(); ++i) checked.push_back({o->inputs[i], docs[i]});
    for (const std::string& warning : check_text_inputs(checked)) fmt::print(stderr, "prepare: warning: {}\n", warning);
    const Dataset d = build_dataset(o->out, docs, *tokenizer, o->val_fraction);
    std::filesystem::create_directories(out);
    remove_stale_temporaries(out);
    const std::string name = o->name.empty() ? out.filename().string() : o->name;
    // The new shards and manifest are written into a temporary folder beside the old dataset,
    // which is replaced only once they are complete: a failure (a full disk, a signal) leaves the
    // old dataset as it was.
    const std::filesystem::path staging = make_temporary_folder(out, "dataset", "tmp");
    write_split(staging, name, "train", d.train, o->shard_tokens);
    write_split(staging, name, "val", d.val, o->shard_tokens);
    const nlohmann::json manifest = {{"tokenizer", tokenizer->name()},   {"vocab_size", tokenizer->vocab_size()},
                                     {"documents", d.documents},         {"train_tokens", d.train.size()},
                                     {"val_tokens", d.val.size()},       {"val_fraction", o->val_fraction},
                                     {"source_bytes", bytes},            {"inputs", o->inputs}};
    write_file_atomic(staging / "dataset.json", manifest.dump(2) + "\n");
    if (o->force) {
      // The manifest goes first: a folder caught between the two steps holds no dataset.json,
      // so it is never read as a mixture of old and new shards.
      std::filesystem::remove(out / "dataset.json");
      for (const auto& e : std::filesystem::directory_iterator(out)) {
        if (e.is_regular_file() && e.path().extension() == ".bin") std::filesystem::remove(e.path());
      }
    }
    for (const auto& e : std::filesystem::directory_iterator(staging)) {
      if (e.path().filename() != "dataset.json") std::filesystem::rename(e.path(), out / e.path().filename());
    }
    std::filesystem::rename(staging / "dataset.json", out / "dataset.json");
    std::filesystem::remove(staging);
    fmt::print("prepared {}: {} documents, {} bytes -> {} train + {} val {} tokens\n", o->out, d.documents, bytes,
               d.train.size(), d.val.size(), tokenizer->name());
    return 0;
  };
  return command;
}

}  // namespace quartet::cli

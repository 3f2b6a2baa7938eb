// `quartet prepare`: text files (plain or gzip) -> train/val token shards in llm.c's format,
// plus dataset.json naming the tokenizer.
#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <iostream>
#include <iterator>
#include <unordered_map>
#include <limits>
#include <memory>
#include <optional>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/option_checks.h"
#include "cli/progress.h"
#include "quartet/data/dataset.h"
#include "quartet/data/shards.h"
#include "quartet/data/text_input.h"
#include "quartet/error.h"
#include "quartet/util/checked.h"
#include "quartet/util/files.h"
#include "quartet/util/parallel_for.h"
#include "quartet/util/sha256.h"

namespace quartet::cli {

namespace {

struct PrepareOptions {
  std::vector<std::string> inputs;
  std::string files_from;
  int threads = 0;  // 0: the hardware's
  bool skip_binary = false;
  bool dedupe = false;
  std::optional<std::uint64_t> shuffle_seed;
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

// One input of the corpus as sources.tsv records it: enough to fetch the same files again and
// check them (sha256sum prints the same digests), and what became of each.
struct SourceFile {
  std::string path;
  std::size_t bytes = 0;      // on disk (compressed, for .gz)
  std::string sha256;         // of the bytes on disk
  std::string status = "used";  // or "skipped: binary", "skipped: same contents as <path>"
  std::int64_t tokens = 0;
};

constexpr std::size_t kMaxInputsInManifest = 1000;

std::vector<std::string> read_path_list(const std::string& list) {
  const std::string text = list == "-" ? std::string(std::istreambuf_iterator<char>(std::cin), {}) : read_file(list);
  std::vector<std::string> paths;
  std::size_t line = 0;
  for (std::size_t at = 0; at < text.size();) {
    const std::size_t end = std::min(text.find('\n', at), text.size());
    std::string path = text.substr(at, end - at);
    ++line;
    at = end + 1;
    if (!path.empty() && path.back() == '\r') path.pop_back();
    if (path.empty()) continue;
    if (path.find('\0') != std::string::npos) {
      throw Error(fmt::format("--files-from {}: line {} holds a NUL byte; the list takes one path per line", list, line));
    }
    paths.push_back(std::move(path));
  }
  if (paths.empty()) throw Error(fmt::format("--files-from {} lists no files", list));
  return paths;
}

// Later inputs whose bytes equal an earlier one's are skipped (same digest: a collision of
// SHA-256 is not a concern here).
void mark_duplicates(std::vector<SourceFile>& sources) {
  std::unordered_map<std::string, std::size_t> first;
  for (std::size_t i = 0; i < sources.size(); ++i) {
    if (sources[i].status != "used") continue;
    const auto [it, fresh] = first.emplace(sources[i].sha256, i);
    if (!fresh) sources[i].status = "skipped: same contents as " + sources[it->second].path;
  }
}

std::string format_sources_tsv(const std::vector<SourceFile>& sources) {
  std::string out = "# path\tbytes\tsha256\ttokens\tstatus\n";
  for (const SourceFile& f : sources) out += fmt::format("{}\t{}\t{}\t{}\t{}\n", f.path, f.bytes, f.sha256, f.tokens, f.status);
  return out;
}

// A corpus of many files can raise thousands of warnings: the first few, then a count.
void print_warnings(const std::vector<std::string>& warnings) {
  constexpr std::size_t kShown = 20;
  for (std::size_t i = 0; i < warnings.size() && i < kShown; ++i) fmt::print(stderr, "prepare: warning: {}\n", warnings[i]);
  if (warnings.size() > kShown) {
    fmt::print(stderr, "prepare: warning: ... and {} more warnings like these\n", warnings.size() - kShown);
  }
}

}  // namespace

Command add_prepare_command(CLI::App& parent) {
  auto o = std::make_shared<PrepareOptions>();
  CLI::App* app = parent.add_subcommand("prepare", "Tokenize text files (plain or .gz; one document each) into train/val shards");
  app->add_option("inputs", o->inputs, "text files");
  app->add_option("--files-from", o->files_from,
                  "a file listing more inputs, one path per line ('-': standard input); for corpora of many files");
  app->add_option("--threads", o->threads, "threads that read and tokenize (default: one per core)")
      ->check(integer_in(0, kMaxInt32));
  app->add_flag("--skip-binary", o->skip_binary,
                "skip inputs that look binary (a NUL byte, or >10% invalid UTF-8) instead of stopping; listed in "
                "sources.tsv");
  app->add_option("--shuffle", o->shuffle_seed,
                  "put the documents in an order drawn from this seed (default: the order given); a corpus "
                  "listed by path is otherwise trained one folder at a time")
      ->check(unsigned_integer());
  app->add_flag("--dedupe", o->dedupe, "keep one copy of inputs with identical contents; the others are listed in "
                                        "sources.tsv");
  app->add_option("--out", o->out, "output folder")->required();
  app->add_option("--tokenizer", o->tokenizer, "gpt2 or byte")
      ->capture_default_str()
      ->check(name_one_of({"byte", "gpt2"}));
  app->add_option("--name", o->name, "shard name prefix (default: the output folder's name)");
  app->add_option("--val-fraction", o->val_fraction, "share of each document (its end) kept for validation")
      ->capture_default_str()
      ->check(number_in(0, 1, false, false));
  // A shard's header counts its tokens in an int32.
  app->add_option("--shard-tokens", o->shard_tokens, "tokens per shard file (at most 2147483647)")
      ->capture_default_str()
      ->check(integer_in(1, kMaxInt32));
  app->add_option("--max-input-bytes", o->max_input_bytes,
                  "largest size a .gz input may decompress to (a guard against gzip bombs)")
      ->capture_default_str()
      ->check(integer_in(1, kMaxInt64));
  app->add_flag("--force", o->force, "replace shards already in the output folder");

  Command command;
  command.app = app;
  command.check = [o]() {
    // The shards are written as <out>/<name>_<split>_NNNNNN.bin: a name with a path in it would
    // put them outside --out.
    if (!o->name.empty()) check_plain_name(o->name, "--name");
  };
  command.run = [o]() {
    const std::filesystem::path out(o->out);
    const std::unique_ptr<Tokenizer> tokenizer = make_tokenizer(o->tokenizer);
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
    std::vector<std::string> paths = o->inputs;
    if (!o->files_from.empty()) {
      const std::vector<std::string> listed = read_path_list(o->files_from);
      paths.insert(paths.end(), listed.begin(), listed.end());
    }
    if (paths.empty()) throw Error("no input files: give their paths, or --files-from a list of them");
    if (o->threads < 0) throw Error(fmt::format("--threads must be at least 1 (0: one per core), got {}", o->threads));
    const int threads = o->threads == 0 ? default_thread_count() : o->threads;
    // Read every input first: a missing or corrupt file stops the command before anything is written.
    std::vector<SourceFile> sources(paths.size());
    std::vector<std::string> texts(paths.size());
    {
      ProgressLine progress("read");
      parallel_for(
          paths.size(), threads,
          [&](std::size_t i, int) {
            SourceFile& f = sources[i];
            f.path = paths[i];
            const std::string raw = read_file(f.path);
            f.bytes = raw.size();
            f.sha256 = sha256_hex(raw);
            texts[i] = std::filesystem::path(f.path).extension() == ".gz"
                           ? gunzip(raw, f.path, static_cast<std::size_t>(o->max_input_bytes))
                           : raw;
            if (o->skip_binary && !binary_evidence(texts[i]).empty()) {
              f.status = "skipped: binary";
              texts[i].clear();
            }
          },
          [&](std::size_t done) { progress.update(static_cast<long>(done), static_cast<long>(paths.size()), "files"); });
      progress.finish();
    }
    if (o->dedupe) mark_duplicates(sources);
    // Binary inputs stop the command here (unless skipped); empty and repeated ones are worth a word, no more.
    std::vector<TextInput> checked;
    std::vector<std::string_view> docs;
    std::size_t bytes = 0;
    for (std::size_t i = 0; i < paths.size(); ++i) {
      if (sources[i].status != "used") continue;
      checked.push_back({paths[i], texts[i]});
      docs.push_back(texts[i]);
      bytes += texts[i].size();
    }
    print_warnings(check_text_inputs(checked));
    if (bytes == 0) {
      std::vector<std::string> why;  // each input and what became of it, the first few
      for (std::size_t i = 0; i < sources.size() && why.size() < 5; ++i) {
        why.push_back(fmt::format("{} ({})", sources[i].path, sources[i].status == "used" ? "empty" : sources[i].status));
      }
      if (sources.size() > why.size()) why.push_back(fmt::format("and {} more", sources.size() - why.size()));
      throw Error(fmt::format("the {} input file{} hold{} no text: {}; there is nothing to make a dataset of; nothing "
                              "was written",
                              paths.size(), paths.size() == 1 ? "" : "s", paths.size() == 1 ? "s" : "",
                              fmt::join(why, ", ")));
    }
    std::vector<std::vector<std::int32_t>> ids;
    {
      ProgressLine progress("tokenize");
      ids = encode_documents(docs, o->tokenizer, threads, [&](std::size_t done) {
        progress.update(static_cast<long>(done), static_cast<long>(docs.size()), "documents");
      });
      progress.finish();
    }
    for (std::size_t i = 0, d = 0; i < sources.size(); ++i) {
      if (sources[i].status == "used") sources[i].tokens = static_cast<std::int64_t>(ids[d++].size());
    }
    texts.clear();
    if (o->shuffle_seed) {
      std::vector<std::vector<std::int32_t>> shuffled(ids.size());
      const std::vector<std::size_t> order = seeded_permutation(ids.size(), *o->shuffle_seed);
      for (std::size_t k = 0; k < order.size(); ++k) shuffled[k] = std::move(ids[order[k]]);
      ids = std::move(shuffled);
    }
    const Dataset d = dataset_from_ids(o->out, *tokenizer, ids, o->val_fraction);
    ids.clear();
    std::filesystem::create_directories(out);
    remove_stale_temporaries(out);
    const std::string name = o->name.empty() ? out.filename().string() : o->name;
    // The new shards and manifest are written into a temporary folder beside the old dataset,
    // which is replaced only once they are complete: a failure (a full disk, a signal) leaves the
    // old dataset as it was.
    const std::filesystem::path staging = make_temporary_folder(out, "dataset", "tmp");
    write_split(staging, name, "train", d.train, o->shard_tokens);
    write_split(staging, name, "val", d.val, o->shard_tokens);
    nlohmann::json manifest = {{"tokenizer", tokenizer->name()},   {"vocab_size", tokenizer->vocab_size()},
                                     {"documents", d.documents},         {"train_tokens", d.train.size()},
                                     {"val_tokens", d.val.size()},       {"val_fraction", o->val_fraction},
                                     {"source_bytes", bytes},            {"inputs", paths}};
    const std::string sources_tsv = format_sources_tsv(sources);
    write_file_atomic(staging / "sources.tsv", sources_tsv);
    manifest["input_files"] = sources.size();
    if (o->shuffle_seed) manifest["shuffle_seed"] = *o->shuffle_seed;
    manifest["sources"] = "sources.tsv";
    manifest["sources_sha256"] = sha256_hex(sources_tsv);
    // Thousands of paths belong in sources.tsv, not in the manifest every run reads.
    if (sources.size() > kMaxInputsInManifest) manifest.erase("inputs");
    write_file_atomic(staging / "dataset.json", manifest.dump(2) + "\n");
    if (o->force) {
      // The manifest goes first: a folder caught between the two steps holds no dataset.json,
      // so it is never read as a mixture of old and new shards.
      std::filesystem::remove(out / "dataset.json");
      for (const auto& e : std::filesystem::directory_iterator(out)) {
        if (e.is_regular_file() && (e.path().extension() == ".bin" || e.path().filename() == "sources.tsv")) {
          std::filesystem::remove(e.path());
        }
      }
    }
    for (const auto& e : std::filesystem::directory_iterator(staging)) {
      if (e.path().filename() != "dataset.json") std::filesystem::rename(e.path(), out / e.path().filename());
    }
    std::filesystem::rename(staging / "dataset.json", out / "dataset.json");
    std::filesystem::remove(staging);
    const auto skipped = std::count_if(sources.begin(), sources.end(), [](const SourceFile& f) { return f.status != "used"; });
    fmt::print("prepared {}: {} documents, {} bytes -> {} train + {} val {} tokens{}\n", o->out, d.documents, bytes,
               d.train.size(), d.val.size(), tokenizer->name(),
               skipped > 0 ? fmt::format(" ({} of {} inputs skipped: sources.tsv says why)", skipped, sources.size()) : "");
    return 0;
  };
  return command;
}

}  // namespace quartet::cli

#include "quartet/data/dataset.h"

#include <fmt/format.h>

#include <algorithm>
#include <tuple>
#include <optional>
#include <cmath>
#include <filesystem>
#include <iterator>
#include <memory>
#include <random>
#include <utility>
#include <nlohmann/json.hpp>

#include "quartet/data/embedded.h"
#include "quartet/data/shards.h"
#include "quartet/error.h"
#include "quartet/util/files.h"
#include "quartet/util/parallel_for.h"

namespace quartet {

Dataset dataset_from_ids(const std::string& source, const Tokenizer& tokenizer,
                         const std::vector<std::vector<std::int32_t>>& ids_per_document, double val_fraction) {
  if (!(val_fraction > 0.0) || !(val_fraction < 1.0)) {
    throw Error(fmt::format("the validation fraction must be in (0, 1), got {}", val_fraction));
  }
  if (tokenizer.vocab_size() > 65536) throw Error("the tokenizer's vocabulary does not fit the uint16 shard format");
  Dataset d;
  d.source = source;
  d.tokenizer = tokenizer.name();
  for (const std::vector<std::int32_t>& ids : ids_per_document) {
    if (ids.empty()) continue;
    const auto n_val = std::max<std::size_t>(1, static_cast<std::size_t>(std::llround(val_fraction * static_cast<double>(ids.size()))));
    const std::size_t n_train = ids.size() > n_val ? ids.size() - n_val : 0;
    const auto append = [&](std::vector<std::uint16_t>& out, std::size_t from, std::size_t to) {
      out.push_back(static_cast<std::uint16_t>(tokenizer.eot()));
      for (std::size_t i = from; i < to; ++i) out.push_back(static_cast<std::uint16_t>(ids[i]));
    };
    if (n_train > 0) append(d.train, 0, n_train);
    append(d.val, n_train, ids.size());
    ++d.documents;
  }
  return d;
}

Dataset build_dataset(const std::string& source, const std::vector<std::string>& documents, const Tokenizer& tokenizer,
                      double val_fraction) {
  std::vector<std::vector<std::int32_t>> ids;
  ids.reserve(documents.size());
  for (const std::string& doc : documents) ids.push_back(tokenizer.encode(doc));
  return dataset_from_ids(source, tokenizer, ids, val_fraction);
}

std::vector<std::size_t> seeded_permutation(std::size_t n, std::uint64_t seed) {
  std::vector<std::size_t> order(n);
  for (std::size_t i = 0; i < n; ++i) order[i] = i;
  std::mt19937_64 rng(seed);
  for (std::size_t i = n; i > 1; --i) {
    // A draw in [0, i) without modulo bias: reject the top partial range of 2^64.
    const std::uint64_t bound = i, limit = ~std::uint64_t{0} - (~std::uint64_t{0} % bound);
    std::uint64_t r;
    do {
      r = rng();
    } while (r >= limit);
    std::swap(order[i - 1], order[static_cast<std::size_t>(r % bound)]);
  }
  return order;
}

std::vector<std::vector<std::int32_t>> encode_documents(const std::vector<std::string_view>& documents,
                                                        const std::string& tokenizer_name, int threads,
                                                        const std::function<void(std::size_t)>& progress) {
  const int workers = std::max(1, std::min<int>(threads, static_cast<int>(std::max<std::size_t>(1, documents.size()))));
  std::vector<std::unique_ptr<Tokenizer>> tokenizers;
  for (int w = 0; w < workers; ++w) tokenizers.push_back(make_tokenizer(tokenizer_name));
  std::vector<std::vector<std::int32_t>> ids(documents.size());
  parallel_for(
      documents.size(), workers,
      [&](std::size_t i, int worker) { ids[i] = tokenizers[static_cast<std::size_t>(worker)]->encode(documents[i]); },
      progress);
  return ids;
}

std::vector<std::string> embedded_corpus_documents(const std::string& name) {
  const std::vector<std::string> files = embedded_files("corpus/" + name + "/");
  if (files.empty()) throw Error(fmt::format("there is no embedded corpus named '{}' (the program embeds 'austen')", name));
  std::vector<std::string> docs;
  for (const std::string& f : files) docs.push_back(gunzip(*embedded_file(f), "embedded file " + f));
  return docs;
}

namespace {

// The split a shard belongs to, from its name as llm.c and `quartet prepare` write it:
// <name>_<split>[_<index>].bin, e.g. fineweb_train_000001.bin or shakespeare_val.bin. Only that
// place counts, so a dataset named "interval" or "trainset" does not mix the splits. Empty when
// the name does not say.
std::string shard_split(const std::filesystem::path& file) {
  if (file.extension() != ".bin") return {};
  std::string stem = file.stem().string();
  std::size_t cut = stem.rfind('_');
  if (cut != std::string::npos && cut + 1 < stem.size() &&
      stem.find_first_not_of("0123456789", cut + 1) == std::string::npos) {
    stem.resize(cut);  // the index
  }
  cut = stem.rfind('_');
  return cut == std::string::npos ? stem : stem.substr(cut + 1);
}

// A split's tokens, shard after shard in name order, and where each shard starts in them.
struct SplitTokens {
  std::vector<std::uint16_t> tokens;
  std::vector<std::pair<std::filesystem::path, std::size_t>> shard_starts;
};

SplitTokens read_split(const std::filesystem::path& folder, const std::string& split) {
  std::vector<std::filesystem::path> shards;
  for (const auto& entry : std::filesystem::directory_iterator(folder)) {
    if (shard_split(entry.path()) == split) shards.push_back(entry.path());
  }
  std::sort(shards.begin(), shards.end());
  if (shards.empty()) {
    throw Error(fmt::format("{}: no {} shards (files named <name>_{}_<index>.bin or <name>_{}.bin); make them with "
                            "`quartet prepare`",
                            folder.string(), split, split, split));
  }
  SplitTokens out;
  for (const auto& s : shards) {
    const std::vector<std::uint16_t> part = read_shard(s);
    out.shard_starts.emplace_back(s, out.tokens.size());
    out.tokens.insert(out.tokens.end(), part.begin(), part.end());
  }
  return out;
}

// A token beyond the tokenizer's vocabulary is an error naming its shard file and position.
void check_vocabulary(const SplitTokens& split, const Tokenizer& tokenizer) {
  const auto& t = split.tokens;
  const auto bad = std::find_if(t.begin(), t.end(), [&](std::uint16_t v) { return v >= tokenizer.vocab_size(); });
  if (bad == t.end()) return;
  const auto at = static_cast<std::size_t>(bad - t.begin());
  const auto shard = std::prev(std::upper_bound(split.shard_starts.begin(), split.shard_starts.end(), at,
                                                [](std::size_t i, const auto& start) { return i < start.second; }));
  throw Error(fmt::format("{}: token {} at position {} is outside the {} tokenizer's vocabulary of {} (a shard of "
                          "another dataset, or a damaged one)",
                          shard->first.string(), *bad, at - shard->second, tokenizer.name(), tokenizer.vocab_size()));
}

// A count the manifest may hold (`quartet prepare` writes them): absent, or a non-negative integer.
std::optional<std::int64_t> manifest_count(const nlohmann::json& j, const char* key) {
  if (!j.contains(key)) return std::nullopt;
  const nlohmann::json& v = j.at(key);
  if (!v.is_number_integer() || v.get<std::int64_t>() < 0) {
    throw Error(fmt::format("\"{}\" must be a non-negative integer, found {}", key, v.dump()));
  }
  return v.get<std::int64_t>();
}

// The tokenizer of a folder without dataset.json. llm.c writes none and its shards are GPT-2
// tokens, each document opening with <|endoftext|> (50256), so a stream that opens with 50256
// is taken as GPT-2. Anything else (byte tokens open with 256) could be read as the wrong
// vocabulary without any error, so it is refused rather than guessed.
std::string tokenizer_without_manifest(const std::string& source, const std::vector<std::uint16_t>& train,
                                       const std::string& requested) {
  constexpr std::uint16_t kGpt2Eot = 50256, kByteEot = 256;
  if (!train.empty() && train.front() == kGpt2Eot) {
    if (!requested.empty() && requested != "gpt2") {
      throw Error(fmt::format("{} has no dataset.json and its tokens are GPT-2's (llm.c's shards), not '{}'", source,
                              requested));
    }
    return "gpt2";
  }
  const std::string found = train.empty() ? std::string("an empty train split")
                                          : fmt::format("a train split opening with token {}{}", train.front(),
                                                        train.front() == kByteEot ? " (the byte tokenizer's "
                                                                                    "<|endoftext|>)"
                                                                                  : "");
  throw Error(fmt::format("{} has no dataset.json naming its tokenizer, and {} is not llm.c's GPT-2 layout (which "
                          "opens with <|endoftext|> 50256); write {}/dataset.json as {{\"tokenizer\": \"byte\"}} or "
                          "{{\"tokenizer\": \"gpt2\"}}, or make the folder again with `quartet prepare`",
                          source, found, source));
}

}  // namespace

Dataset load_dataset(const std::string& source, const std::string& tokenizer_name) {
  if (source.rfind("embedded:", 0) == 0) {
    const std::unique_ptr<Tokenizer> tokenizer = make_tokenizer(tokenizer_name.empty() ? "byte" : tokenizer_name);
    return build_dataset(source, embedded_corpus_documents(source.substr(9)), *tokenizer, 0.05);
  }
  const std::filesystem::path folder(source);
  if (!std::filesystem::is_directory(folder)) {
    throw Error(fmt::format("data source '{}' is neither embedded:<name> nor a folder of shards", source));
  }
  Dataset d;
  d.source = source;
  const std::filesystem::path manifest = folder / "dataset.json";
  const bool has_manifest = std::filesystem::exists(manifest);
  std::optional<std::int64_t> vocab_size, train_tokens, val_tokens;
  if (has_manifest) {
    try {
      const nlohmann::json j = nlohmann::json::parse(read_file(manifest));
      d.tokenizer = j.at("tokenizer").get<std::string>();
      d.documents = manifest_count(j, "documents").value_or(0);
      vocab_size = manifest_count(j, "vocab_size");
      train_tokens = manifest_count(j, "train_tokens");
      val_tokens = manifest_count(j, "val_tokens");
    } catch (const nlohmann::json::exception& e) {
      throw Error(fmt::format("{}: not a valid dataset manifest ({})", manifest.string(), e.what()));
    } catch (const Error& e) {
      throw Error(fmt::format("{}: not a valid dataset manifest ({})", manifest.string(), e.what()));
    }
  }
  if (has_manifest && !tokenizer_name.empty() && tokenizer_name != d.tokenizer) {
    throw Error(fmt::format("{} was tokenized with '{}', not '{}'", source, d.tokenizer, tokenizer_name));
  }
  if (has_manifest && vocab_size) {
    const std::int64_t named = make_tokenizer(d.tokenizer)->vocab_size();
    if (*vocab_size != named) {
      throw Error(fmt::format("{}: vocab_size {} is not the {} tokenizer's {}", manifest.string(), *vocab_size,
                              d.tokenizer, named));
    }
  }
  SplitTokens train = read_split(folder, "train"), val = read_split(folder, "val");
  if (!has_manifest) d.tokenizer = tokenizer_without_manifest(source, train.tokens, tokenizer_name);
  const std::unique_ptr<Tokenizer> tokenizer = make_tokenizer(d.tokenizer);
  check_vocabulary(train, *tokenizer);
  check_vocabulary(val, *tokenizer);
  d.train = std::move(train.tokens);
  d.val = std::move(val.tokens);
  // A shard missing, added or replaced since `quartet prepare` wrote the manifest would change
  // what trains without any other sign.
  for (const auto& [split, expected, tokens] : {std::tuple{"train", train_tokens, &d.train},
                                                std::tuple{"val", val_tokens, &d.val}}) {
    if (expected && *expected != static_cast<std::int64_t>(tokens->size())) {
      throw Error(fmt::format("{}: the manifest counts {} {} tokens but the {} shards hold {} (a shard missing, added "
                              "or replaced since it was written?)",
                              manifest.string(), *expected, split, split, tokens->size()));
    }
  }
  return d;
}

DataOrder parse_data_order(const std::string& name) {
  if (name == "sequential") return DataOrder::sequential;
  if (name == "shuffled") return DataOrder::shuffled;
  throw Error(fmt::format("unknown data order '{}' (expected sequential or shuffled)", name));
}

const char* data_order_name(DataOrder order) { return order == DataOrder::shuffled ? "shuffled" : "sequential"; }

BatchLoader::BatchLoader(const std::vector<std::uint16_t>& stream, std::int64_t batch, std::int64_t seq,
                         const std::string& what, DataOrder order, std::uint64_t seed)
    : stream_(stream), batch_(batch), seq_(seq), order_(order), seed_(seed) {
  if (batch < 1 || seq < 1) throw Error(fmt::format("batch {} and sequence length {} must be positive", batch, seq));
  if (static_cast<std::int64_t>(stream.size()) < batch * seq + 1) {
    throw Error(fmt::format("the {} split has {} tokens, fewer than one batch of {} x {} + 1", what, stream.size(), batch,
                            seq));
  }
  if (order_ == DataOrder::shuffled) {
    windows_ = (static_cast<std::int64_t>(stream.size()) - 1) / seq;  // >= batch, by the check above
    shuffle_windows();
  }
}

// Each epoch's permutation from the run's seed and the epoch alone, so that a resumed run
// reads the same windows as the run it continues.
void BatchLoader::shuffle_windows() {
  std::uint64_t z = seed_ + 0x9E3779B97F4A7C15ull * static_cast<std::uint64_t>(epoch_ + 1);  // splitmix64
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  window_order_ = seeded_permutation(static_cast<std::size_t>(windows_), z ^ (z >> 31));
}

void BatchLoader::set_epoch(std::int64_t epoch) {
  if (epoch < 0) throw Error(fmt::format("data epoch {} is negative", epoch));
  const bool changed = epoch != epoch_;
  epoch_ = epoch;
  if (order_ == DataOrder::shuffled && changed) shuffle_windows();
}

// Any position in the stream, including one too near its end for another window: that is where
// a loader stands after the last window of an epoch (next() wraps), and so where a checkpoint
// taken then resumes.
void BatchLoader::set_position(std::int64_t position) {
  if (order_ == DataOrder::shuffled) {
    if (position < 0 || position > windows_) {
      throw Error(fmt::format("data position {} is outside the {} windows of the shuffled stream", position, windows_));
    }
  } else if (position < 0 || position > static_cast<std::int64_t>(stream_.size())) {
    throw Error(fmt::format("data position {} is outside the stream of {} tokens", position, stream_.size()));
  }
  position_ = position;
}

void BatchLoader::next(std::vector<std::int32_t>& inputs, std::vector<std::int32_t>& targets) {
  const std::int64_t n = batch_ * seq_;
  if (order_ == DataOrder::shuffled) {
    if (position_ + batch_ > windows_) {
      position_ = 0;
      set_epoch(epoch_ + 1);
    }
    inputs.resize(static_cast<std::size_t>(n));
    targets.resize(static_cast<std::size_t>(n));
    for (std::int64_t b = 0; b < batch_; ++b) {
      const std::size_t start = window_order_[static_cast<std::size_t>(position_ + b)] * static_cast<std::size_t>(seq_);
      for (std::int64_t i = 0; i < seq_; ++i) {
        const auto at = static_cast<std::size_t>(b * seq_ + i);
        inputs[at] = stream_[start + static_cast<std::size_t>(i)];
        targets[at] = stream_[start + static_cast<std::size_t>(i) + 1];
      }
    }
    position_ += batch_;
    return;
  }
  if (position_ + n + 1 > static_cast<std::int64_t>(stream_.size())) {
    position_ = 0;
    ++epoch_;
  }
  inputs.resize(static_cast<std::size_t>(n));
  targets.resize(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) {
    inputs[static_cast<std::size_t>(i)] = stream_[static_cast<std::size_t>(position_ + i)];
    targets[static_cast<std::size_t>(i)] = stream_[static_cast<std::size_t>(position_ + i + 1)];
  }
  position_ += n;
}

}  // namespace quartet

// A dataset is a train and a validation token stream, each document preceded by
// <|endoftext|>, plus the name of the tokenizer that made them.
//
// Sources: "embedded:austen" (the corpus compiled into the program; tokenized at load), or a
// folder of llm.c-format shards (*train*.bin, *val*.bin) as written by `quartet prepare`,
// with a dataset.json naming the tokenizer. A folder without one is taken as llm.c's GPT-2
// shards only when its train stream opens with GPT-2's <|endoftext|> (50256), as llm.c's do;
// otherwise it is refused (byte tokens read as GPT-2 ones would train on garbage silently).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "quartet/data/tokenizer.h"

namespace quartet {

struct Dataset {
  std::string source;
  std::string tokenizer;  // "byte" or "gpt2"
  std::vector<std::uint16_t> train;
  std::vector<std::uint16_t> val;
  std::int64_t documents = 0;
};

// Splits each document: its last val_fraction of tokens (at least one) go to validation.
Dataset build_dataset(const std::string& source, const std::vector<std::string>& documents, const Tokenizer& tokenizer,
                      double val_fraction);

// The same split from documents already encoded (an empty one adds no document).
Dataset dataset_from_ids(const std::string& source, const Tokenizer& tokenizer,
                         const std::vector<std::vector<std::int32_t>>& ids, double val_fraction);

// A permutation of 0..n-1 drawn from `seed` by Fisher-Yates over a 64-bit Mersenne Twister with
// unbiased bounded draws written out here (std::shuffle and std::uniform_int_distribution differ
// between standard libraries): the same order on every platform.
std::vector<std::size_t> seeded_permutation(std::size_t n, std::uint64_t seed);

// Each document's ids, encoded on `threads` threads, each with its own make_tokenizer(
// tokenizer_name) (a tokenizer's piece cache is shared by its callers under a lock): the same
// ids, in the same order, as one tokenizer gives on one thread. progress(done documents) as
// parallel_for (quartet/util/parallel_for.h) calls it.
std::vector<std::vector<std::int32_t>> encode_documents(const std::vector<std::string_view>& documents,
                                                        const std::string& tokenizer_name, int threads,
                                                        const std::function<void(std::size_t)>& progress = {});

// The default embedded corpus' documents (the six novels, in a fixed order).
std::vector<std::string> embedded_corpus_documents(const std::string& name);

// Loads "embedded:<name>" (tokenized with `tokenizer_name`, default byte) or a shard folder.
// Throws Error naming the source and what is missing or wrong.
Dataset load_dataset(const std::string& source, const std::string& tokenizer_name = "");

// The order a training run reads its stream in (--data-order, docs/run-options.md):
//  sequential: each batch is the next batch x seq tokens of the stream (llm.c's loader);
//  shuffled: the stream is cut into windows of seq tokens (each with the token after it as its
//    last target), each batch takes the next `batch` windows of a seeded permutation of them,
//    a new permutation every epoch: the sequences of a batch come from all over the corpus.
enum class DataOrder { sequential, shuffled };
// "sequential" or "shuffled"; Error naming the value otherwise.
DataOrder parse_data_order(const std::string& name);
const char* data_order_name(DataOrder order);

// Batches of batch x seq tokens (and their targets, shifted by one) over a stream in `order`,
// wrapping at the end (one pass over the stream is an epoch). The position and the epoch are
// the whole state (checkpoints keep them): tokens for sequential, windows for shuffled.
class BatchLoader {
 public:
  BatchLoader(const std::vector<std::uint16_t>& stream, std::int64_t batch, std::int64_t seq, const std::string& what,
              DataOrder order = DataOrder::sequential, std::uint64_t seed = 0);
  // inputs and targets receive batch * seq tokens each (targets are inputs shifted by one).
  void next(std::vector<std::int32_t>& inputs, std::vector<std::int32_t>& targets);
  std::int64_t position() const { return position_; }
  void set_position(std::int64_t position);
  std::int64_t epoch() const { return epoch_; }
  void set_epoch(std::int64_t epoch);

 private:
  void shuffle_windows();  // window_order_ for epoch_

  const std::vector<std::uint16_t>& stream_;
  std::int64_t batch_, seq_;
  DataOrder order_;
  std::uint64_t seed_;
  std::int64_t windows_ = 0;              // shuffled: whole windows in the stream
  std::vector<std::size_t> window_order_;  // shuffled: this epoch's permutation of them
  std::int64_t position_ = 0;
  std::int64_t epoch_ = 0;
};

}  // namespace quartet

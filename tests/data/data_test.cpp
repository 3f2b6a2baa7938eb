#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "quartet/data/dataset.h"
#include "quartet/data/shards.h"
#include "quartet/data/tokenizer.h"
#include "quartet/error.h"
#include "quartet/util/files.h"
#include "support/temp_dir.h"

namespace quartet {
namespace {

TEST(ByteTokenizer, RoundTripsEveryByte) {
  const auto t = make_tokenizer("byte");
  EXPECT_EQ(t->vocab_size(), 257);
  EXPECT_EQ(t->eot(), 256);
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  const auto ids = t->encode(all);
  ASSERT_EQ(ids.size(), 256u);
  for (int b = 0; b < 256; ++b) EXPECT_EQ(ids[b], b);
  EXPECT_EQ(t->decode(ids), all);
  const std::vector<std::int32_t> with_eot = {256, 65, 256, 66};
  EXPECT_EQ(t->decode(with_eot), "AB");
  EXPECT_EQ(t->token_bytes(256), 0);
  EXPECT_EQ(t->token_bytes(65), 1);
  const std::vector<std::int32_t> bad = {257};
  EXPECT_THROW(t->decode(bad), Error);
}

TEST(Gpt2Tokenizer, KnownIdsAndRoundTrip) {
  const auto t = make_tokenizer("gpt2");
  EXPECT_EQ(t->vocab_size(), 50257);
  EXPECT_EQ(t->eot(), 50256);
  // Well-known GPT-2 ids: "Hello" 15496, " world" 995.
  EXPECT_EQ(t->encode("Hello world"), (std::vector<std::int32_t>{15496, 995}));
  // "<|endoftext|>" inside text is ordinary text (tiktoken's encode_ordinary), not id 50256.
  const auto eot_text = t->encode("<|endoftext|>");
  EXPECT_GT(eot_text.size(), 1u);
  for (const std::string& s : {std::string("It's 2026: naïve café, 東京, emoji 🎉\n\n\tindented   spaces  "),
                               std::string("x\0y", 3)}) {
    EXPECT_EQ(t->decode(t->encode(s)), s);
  }
  // Invalid UTF-8 becomes U+FFFD, as Python's errors="replace" would make it.
  EXPECT_EQ(t->decode(t->encode("a\xff" "b")), "a\xEF\xBF\xBD" "b");
  EXPECT_THROW(make_tokenizer("sentencepiece"), Error);
}

TEST(Shards, RoundTripInTheLlmcFormat) {
  testing::TempDir dir;
  const std::vector<std::int32_t> tokens = {50256, 1, 2, 65535, 0};
  const auto path = dir.path() / "x_train_000000.bin";
  write_shard(path, tokens);
  const std::string bytes = read_file(path);
  ASSERT_EQ(bytes.size(), 1024u + 10u);
  std::int32_t header[3];
  std::memcpy(header, bytes.data(), 12);
  EXPECT_EQ(header[0], 20240520);
  EXPECT_EQ(header[1], 1);
  EXPECT_EQ(header[2], 5);
  const std::vector<std::uint16_t> back = read_shard(path);
  EXPECT_EQ(back, (std::vector<std::uint16_t>{50256, 1, 2, 65535, 0}));
  const std::vector<std::int32_t> too_big = {70000};
  EXPECT_THROW(write_shard(dir.path() / "y.bin", too_big), Error);
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "y.bin"));
}

TEST(Shards, BadFilesGetClearErrors) {
  testing::TempDir dir;
  const auto path = dir.path() / "s.bin";
  write_shard(path, std::vector<std::int32_t>{1, 2, 3});
  const std::string good = read_file(path);
  const auto expect_error = [&](const std::string& bytes, const char* fragment) {
    write_file_atomic(path, bytes);
    try {
      read_shard(path);
      ADD_FAILURE() << "expected an error with " << fragment;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("s.bin"), std::string::npos) << e.what();
    }
  };
  expect_error(good.substr(0, good.size() - 1), "truncated");
  expect_error(good.substr(0, 100), "shorter than");
  std::string bad_magic = good;
  bad_magic[0] ^= 1;
  expect_error(bad_magic, "magic");
  std::string bad_version = good;
  bad_version[4] = 2;
  expect_error(bad_version, "version");
  expect_error(good + "xx", "bytes");
  EXPECT_THROW(read_shard(dir.path() / "missing.bin"), Error);
}

TEST(Dataset, EmbeddedCorpusSplitsEveryDocument) {
  const Dataset d = load_dataset("embedded:austen");
  EXPECT_EQ(d.tokenizer, "byte");
  EXPECT_EQ(d.documents, 6);
  EXPECT_NEAR(static_cast<double>(d.train.size() + d.val.size()), 4.02e6, 0.05e6);
  EXPECT_NEAR(static_cast<double>(d.val.size()) / static_cast<double>(d.train.size() + d.val.size()), 0.05, 0.001);
  EXPECT_EQ(d.train.front(), 256);  // every document starts with <|endoftext|>
  EXPECT_EQ(std::count(d.train.begin(), d.train.end(), 256), 6);
  EXPECT_EQ(std::count(d.val.begin(), d.val.end(), 256), 6);
  EXPECT_THROW(load_dataset("embedded:shakespeare"), Error);
}

TEST(Dataset, ShardFoldersNeedTheirSplitsAndMatchingTokenizer) {
  testing::TempDir dir;
  EXPECT_THROW(load_dataset(dir.str()), Error);  // no shards
  write_shard(dir.path() / "t_train_000000.bin", std::vector<std::int32_t>{256, 1, 2, 3});
  EXPECT_THROW(load_dataset(dir.str()), Error);  // no val shards
  write_shard(dir.path() / "t_val_000000.bin", std::vector<std::int32_t>{256, 4});
  write_file_atomic(dir.path() / "dataset.json", R"({"tokenizer": "byte", "documents": 1})");
  const Dataset d = load_dataset(dir.str());
  EXPECT_EQ(d.train.size(), 4u);
  EXPECT_EQ(d.val.size(), 2u);
  EXPECT_THROW(load_dataset(dir.str(), "gpt2"), Error);
  write_shard(dir.path() / "t_val_000001.bin", std::vector<std::int32_t>{300});
  EXPECT_THROW(load_dataset(dir.str()), Error);  // 300 is outside the byte vocabulary
  write_file_atomic(dir.path() / "dataset.json", "{not json");
  EXPECT_THROW(load_dataset(dir.str()), Error);
}

// The split is the name's <split> place (<name>_<split>[_<index>].bin), never a substring
// anywhere: a dataset called "trainval" or "interval" keeps its splits apart.
TEST(Dataset, ShardSplitsComeFromTheirPlaceInTheName) {
  testing::TempDir dir;
  write_shard(dir.path() / "trainval_train_000000.bin", std::vector<std::int32_t>{256, 1, 2, 3});
  write_shard(dir.path() / "interval_val_000000.bin", std::vector<std::int32_t>{256, 4});
  write_shard(dir.path() / "shakespeare_val.bin", std::vector<std::int32_t>{256, 5, 6});  // llm.c's unnumbered form
  write_shard(dir.path() / "notes_about_train.txt.bin.bak", std::vector<std::int32_t>{256});
  write_file_atomic(dir.path() / "dataset.json", R"({"tokenizer": "byte", "documents": 1})");
  const Dataset d = load_dataset(dir.str());
  EXPECT_EQ(d.train, (std::vector<std::uint16_t>{256, 1, 2, 3}));
  EXPECT_EQ(d.val.size(), 5u) << "both val shards, in name order";
}

TEST(BatchLoader, WindowsAdvanceAndWrap) {
  std::vector<std::uint16_t> stream(20);
  for (int i = 0; i < 20; ++i) stream[static_cast<std::size_t>(i)] = static_cast<std::uint16_t>(i);
  BatchLoader loader(stream, 2, 4, "test");
  std::vector<std::int32_t> in, tgt;
  loader.next(in, tgt);
  EXPECT_EQ(in, (std::vector<std::int32_t>{0, 1, 2, 3, 4, 5, 6, 7}));
  EXPECT_EQ(tgt, (std::vector<std::int32_t>{1, 2, 3, 4, 5, 6, 7, 8}));
  loader.next(in, tgt);
  EXPECT_EQ(in.front(), 8);
  loader.next(in, tgt);  // 16 + 8 + 1 > 20: wraps to the start, next epoch
  EXPECT_EQ(in.front(), 0);
  EXPECT_EQ(loader.epoch(), 1);
  // A checkpoint taken after an epoch's last window holds a position too near the end for
  // another window: the loader takes it and wraps at its next window.
  loader.set_position(16);
  loader.next(in, tgt);
  EXPECT_EQ(in.front(), 0);
  EXPECT_EQ(loader.epoch(), 2);
  EXPECT_THROW(loader.set_position(21), Error);
  EXPECT_THROW(loader.set_position(-1), Error);
  EXPECT_THROW(BatchLoader(stream, 4, 5, "test"), Error);
}

// The shuffled order: 1000 tokens whose values are their positions, windows of 10 (99 whole
// ones, the last token only a target), 3 a batch: 33 batches an epoch.
std::vector<std::size_t> shuffled_starts(BatchLoader& loader, int batches) {
  std::vector<std::size_t> starts;
  std::vector<std::int32_t> in, tgt;
  for (int b = 0; b < batches; ++b) {
    loader.next(in, tgt);
    EXPECT_EQ(in.size(), 30u);
    for (std::size_t i = 0; i < in.size(); ++i) EXPECT_EQ(tgt[i], in[i] + 1);  // targets shift by one
    for (std::size_t w = 0; w < 3; ++w) {
      for (std::size_t i = 1; i < 10; ++i) EXPECT_EQ(in[w * 10 + i], in[w * 10] + static_cast<std::int32_t>(i));
      starts.push_back(static_cast<std::size_t>(in[w * 10]));
    }
  }
  return starts;
}

TEST(BatchLoader, ShuffledVisitsEveryWindowOnceAnEpochInANewOrder) {
  std::vector<std::uint16_t> stream(1000);
  for (std::size_t i = 0; i < stream.size(); ++i) stream[i] = static_cast<std::uint16_t>(i);
  BatchLoader loader(stream, 3, 10, "test", DataOrder::shuffled, 5);
  const std::vector<std::size_t> first = shuffled_starts(loader, 33), second = shuffled_starts(loader, 33);
  EXPECT_EQ(loader.epoch(), 1);
  std::vector<std::size_t> all(99);
  for (std::size_t w = 0; w < all.size(); ++w) all[w] = w * 10;
  for (const std::vector<std::size_t>* epoch : {&first, &second}) {
    std::vector<std::size_t> sorted = *epoch;
    std::sort(sorted.begin(), sorted.end());
    EXPECT_EQ(sorted, all);  // each window once
    EXPECT_NE(*epoch, all);  // not in the stream's order
  }
  EXPECT_NE(first, second);  // a new permutation each epoch
  BatchLoader same(stream, 3, 10, "test", DataOrder::shuffled, 5), other(stream, 3, 10, "test", DataOrder::shuffled, 6);
  EXPECT_EQ(shuffled_starts(same, 33), first);
  EXPECT_NE(shuffled_starts(other, 33), first);
}

TEST(BatchLoader, ShuffledResumesFromPositionAndEpoch) {
  std::vector<std::uint16_t> stream(1000);
  for (std::size_t i = 0; i < stream.size(); ++i) stream[i] = static_cast<std::uint16_t>(i);
  BatchLoader a(stream, 3, 10, "test", DataOrder::shuffled, 5);
  shuffled_starts(a, 40);  // into the second epoch
  BatchLoader b(stream, 3, 10, "test", DataOrder::shuffled, 5);
  b.set_position(a.position());
  b.set_epoch(a.epoch());
  EXPECT_EQ(a.position(), 21);  // windows, not tokens
  EXPECT_EQ(shuffled_starts(b, 30), shuffled_starts(a, 30));  // across the next epoch's start too
  EXPECT_THROW(b.set_position(100), Error);  // 99 windows
  EXPECT_THROW(b.set_epoch(-1), Error);
  EXPECT_EQ(parse_data_order("shuffled"), DataOrder::shuffled);
  try {
    parse_data_order("random");
    FAIL() << "an unknown order accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'random'"), std::string::npos) << e.what();
  }
}

TEST(Files, GunzipRejectsCorruptData) {
  EXPECT_THROW(gunzip("not gzip at all", "x"), Error);
  EXPECT_THROW(read_file("/no/such/file"), Error);
}

}  // namespace
}  // namespace quartet

// What `quartet prepare` and the shard-folder loader refuse or warn about.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "quartet/data/dataset.h"
#include "quartet/data/shards.h"
#include "quartet/data/text_input.h"
#include "quartet/error.h"
#include "quartet/util/files.h"
#include "support/temp_dir.h"
#include "support/error_of.h"

namespace quartet {
namespace {

using quartet::testing::error_of;

bool has(const std::string& text, const std::string& fragment) { return text.find(fragment) != std::string::npos; }

TEST(TextInputs, PlainUtf8TextPassesSilently) {
  const std::string a = "Emma Woodhouse, handsome, clever, and rich.\n", b = "naïve café 東京 🎉\n";
  EXPECT_TRUE(check_text_inputs({{"a.txt", a}, {"b.txt", b}}).empty());
}

TEST(TextInputs, NulBytesMeanBinary) {
  const std::string data = std::string("PK\x03\x04", 4) + std::string(10, '\0') + "rest";
  const std::string message = error_of([&] { check_text_inputs({{"model.zip", data}}); });
  EXPECT_TRUE(has(message, "model.zip looks binary")) << message;
  EXPECT_TRUE(has(message, "NUL byte at offset 4")) << message;
}

TEST(TextInputs, MostlyInvalidUtf8MeansBinary) {
  std::string data;
  for (int i = 0; i < 1000; ++i) data += static_cast<char>(0x80 + i % 64);  // continuation bytes alone
  data.insert(0, "ok");
  const std::string message = error_of([&] { check_text_inputs({{"noise.bin", data}}); });
  EXPECT_TRUE(has(message, "noise.bin looks binary")) << message;
  EXPECT_TRUE(has(message, "1000 of its 1002 bytes")) << message;
  EXPECT_TRUE(has(message, "the first at offset 2")) << message;
}

TEST(TextInputs, SomeInvalidUtf8IsAWarning) {
  // Latin-1 text: a few bytes that are not UTF-8 ("caf\xe9"), far under the binary share.
  std::string text(2000, 'a');
  text += "caf\xe9 ";
  text += std::string(2000, 'b') + "na\xefve";
  text += "\xEF\xBF\xBD";  // a real U+FFFD is valid UTF-8, not counted
  const std::vector<std::string> warnings = check_text_inputs({{"latin1.txt", text}});
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_TRUE(has(warnings[0], "latin1.txt: 2 bytes are not valid UTF-8 (the first at offset 2003)")) << warnings[0];
}

TEST(TextInputs, EmptyAndRepeatedInputsAreWarnedAbout) {
  const std::string a = "some text", empty;
  const std::vector<std::string> warnings = check_text_inputs(
      {{"a.txt", a}, {"e.txt", empty}, {"./a.txt", a}, {"copy.txt", std::string(a)}, {"other.txt", "other text"}});
  ASSERT_EQ(warnings.size(), 3u);
  EXPECT_EQ(warnings[0], "e.txt is empty: it adds no document");
  EXPECT_EQ(warnings[1], "./a.txt is given more than once (as a.txt before): its text is used twice");
  EXPECT_EQ(warnings[2], "copy.txt has the same contents as a.txt: its text is used twice");
}

// Regression: a folder without dataset.json was read as GPT-2 tokens whatever it held, so byte
// tokens trained as GPT-2 ids without any error.
TEST(ShardFolders, WithoutAManifestByteTokensAreRefused) {
  testing::TempDir dir;
  write_shard(dir.path() / "b_train_000000.bin", std::vector<std::int32_t>{256, 72, 105});
  write_shard(dir.path() / "b_val_000000.bin", std::vector<std::int32_t>{256, 33});
  const std::string message = error_of([&] { load_dataset(dir.str()); });
  EXPECT_TRUE(has(message, dir.str() + " has no dataset.json")) << message;
  EXPECT_TRUE(has(message, "opening with token 256 (the byte tokenizer's <|endoftext|>)")) << message;
  EXPECT_THROW(load_dataset(dir.str(), "byte"), Error);  // a flag does not stand in for the manifest
}

TEST(ShardFolders, WithoutAManifestLlmcGpt2ShardsStillLoad) {
  testing::TempDir dir;
  write_shard(dir.path() / "fineweb_train_000001.bin", std::vector<std::int32_t>{50256, 15496, 995});
  write_shard(dir.path() / "fineweb_val_000000.bin", std::vector<std::int32_t>{50256, 13});
  const Dataset d = load_dataset(dir.str());
  EXPECT_EQ(d.tokenizer, "gpt2");
  EXPECT_EQ(d.train, (std::vector<std::uint16_t>{50256, 15496, 995}));
  EXPECT_TRUE(has(error_of([&] { load_dataset(dir.str(), "byte"); }), "not 'byte'"));
}

TEST(ShardFolders, AnEmptyTrainSplitWithoutAManifestIsRefused) {
  testing::TempDir dir;
  write_shard(dir.path() / "t_train_000000.bin", std::vector<std::int32_t>{});
  write_shard(dir.path() / "t_val_000000.bin", std::vector<std::int32_t>{50256, 1});
  EXPECT_TRUE(has(error_of([&] { load_dataset(dir.str()); }), "an empty train split"));
}

TEST(ShardFolders, ManifestNumbersAreChecked) {
  testing::TempDir dir;
  write_shard(dir.path() / "t_train_000000.bin", std::vector<std::int32_t>{256, 1});
  write_shard(dir.path() / "t_val_000000.bin", std::vector<std::int32_t>{256, 2});
  for (const char* bad : {R"({"tokenizer": "byte", "documents": 1.5})", R"({"tokenizer": "byte", "documents": -3})",
                          R"({"tokenizer": "byte", "documents": 1e30})", R"(["byte"])"}) {
    write_file_atomic(dir.path() / "dataset.json", bad);
    EXPECT_TRUE(has(error_of([&] { load_dataset(dir.str()); }), "not a valid dataset manifest")) << bad;
  }
  write_file_atomic(dir.path() / "dataset.json", R"({"tokenizer": "byte", "documents": 7})");
  EXPECT_EQ(load_dataset(dir.str()).documents, 7);
}

// The manifest's counts are checked against the shards: a shard deleted, added or replaced
// since `quartet prepare` wrote it would otherwise change what trains without any sign.
TEST(ShardFolders, TheManifestsCountsMustMatchTheShards) {
  testing::TempDir dir;
  write_shard(dir.path() / "t_train_000000.bin", std::vector<std::int32_t>{256, 1, 2, 3});
  write_shard(dir.path() / "t_train_000001.bin", std::vector<std::int32_t>{4, 5});
  write_shard(dir.path() / "t_val_000000.bin", std::vector<std::int32_t>{256, 2});
  const auto manifest = [&](const std::string& fields) {
    write_file_atomic(dir.path() / "dataset.json", R"({"tokenizer": "byte", )" + fields + "}");
  };
  manifest(R"("vocab_size": 257, "train_tokens": 6, "val_tokens": 2)");
  EXPECT_EQ(load_dataset(dir.str()).train.size(), 6u);
  std::filesystem::remove(dir.path() / "t_train_000001.bin");
  std::string message = error_of([&] { load_dataset(dir.str()); });
  EXPECT_TRUE(has(message, "dataset.json: the manifest counts 6 train tokens but the train shards hold 4")) << message;
  manifest(R"("train_tokens": 4, "val_tokens": 3)");
  message = error_of([&] { load_dataset(dir.str()); });
  EXPECT_TRUE(has(message, "counts 3 val tokens but the val shards hold 2")) << message;
  manifest(R"("vocab_size": 50257, "train_tokens": 4)");
  message = error_of([&] { load_dataset(dir.str()); });
  EXPECT_TRUE(has(message, "vocab_size 50257 is not the byte tokenizer's 257")) << message;
  manifest(R"("train_tokens": "many")");
  EXPECT_TRUE(has(error_of([&] { load_dataset(dir.str()); }), "not a valid dataset manifest"));
  // A manifest without the counts (written by hand, or by an older `quartet prepare`) still loads.
  manifest(R"("documents": 1)");
  EXPECT_EQ(load_dataset(dir.str()).train.size(), 4u);
}

// A token beyond the vocabulary names the shard file and the position in it, not the folder.
TEST(ShardFolders, ATokenBeyondTheVocabularyNamesItsShard) {
  testing::TempDir dir;
  write_shard(dir.path() / "t_train_000000.bin", std::vector<std::int32_t>{256, 1, 2});
  write_shard(dir.path() / "t_train_000001.bin", std::vector<std::int32_t>{4, 300, 5});
  write_shard(dir.path() / "t_val_000000.bin", std::vector<std::int32_t>{256, 2});
  write_file_atomic(dir.path() / "dataset.json", R"({"tokenizer": "byte"})");
  const std::string message = error_of([&] { load_dataset(dir.str()); });
  EXPECT_TRUE(has(message, (dir.path() / "t_train_000001.bin").string() + ": token 300 at position 1")) << message;
  EXPECT_TRUE(has(message, "vocabulary of 257")) << message;
}

}  // namespace
}  // namespace quartet

// What `quartet prepare` and the shard-folder loader refuse or warn about.
#include <gtest/gtest.h>

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

}  // namespace
}  // namespace quartet

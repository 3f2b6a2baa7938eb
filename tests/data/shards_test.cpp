// Shard edge cases the format allows (an empty shard) and parse_shard on raw bytes.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "quartet/data/shards.h"
#include "quartet/error.h"
#include "quartet/util/files.h"
#include "support/temp_dir.h"

namespace quartet {
namespace {

// The header as the llm.c format defines it, written by hand (not by write_shard).
std::string shard_header(std::int32_t magic, std::int32_t version, std::int32_t count) {
  std::string bytes(1024, '\0');
  const std::int32_t h[3] = {magic, version, count};
  std::memcpy(bytes.data(), h, sizeof(h));
  return bytes;
}

// Regression: `quartet prepare` writes an empty train shard for a one-byte document (its one
// token goes to validation), and reading it memcpy'd from a null vector.data() (undefined
// behaviour, reported by UBSan in the sanitized build of this test).
TEST(Shards, AnEmptyShardRoundTrips) {
  testing::TempDir dir;
  const auto path = dir.path() / "tiny_train_000000.bin";
  write_shard(path, std::vector<std::int32_t>{});
  EXPECT_EQ(read_file(path), shard_header(20240520, 1, 0));
  EXPECT_TRUE(read_shard(path).empty());
  EXPECT_TRUE(parse_shard(shard_header(20240520, 1, 0), "empty").empty());
}

TEST(Shards, ParseReadsTokensAfterTheHeader) {
  std::string bytes = shard_header(20240520, 1, 2);
  bytes += std::string("\x01\x00\xff\xff", 4);
  EXPECT_EQ(parse_shard(bytes, "two"), (std::vector<std::uint16_t>{1, 65535}));
}

TEST(Shards, CraftedCountsAreRefusedWithTheirValues) {
  const auto message = [](const std::string& bytes) {
    try {
      parse_shard(bytes, "crafted.bin");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_EQ(message(shard_header(20240520, 1, -1)), "crafted.bin: negative token count -1 in the header");
  const std::string huge = message(shard_header(20240520, 1, 0x7FFFFFFF));
  EXPECT_NE(huge.find("announces 2147483647 tokens (4294968318 bytes) but the file has 1024 bytes (truncated)"),
            std::string::npos)
      << huge;
}

}  // namespace
}  // namespace quartet

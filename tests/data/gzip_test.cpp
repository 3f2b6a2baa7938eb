// The gzip reader behind `quartet prepare` and the embedded files: every member of a
// multi-member file, no silent trailing bytes, a cap on the decompressed size.
#include <gtest/gtest.h>
#include <zlib.h>

#include <string>

#include "quartet/error.h"
#include "quartet/util/files.h"
#include "support/temp_dir.h"
#include "support/error_of.h"

namespace quartet {
namespace {

// One gzip member holding `text`, made by zlib directly (not by the code under test).
std::string gzip_member(const std::string& text) {
  z_stream zs{};
  EXPECT_EQ(deflateInit2(&zs, Z_BEST_COMPRESSION, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
  std::string out(deflateBound(&zs, text.size()) + 64, '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(text.data()));
  zs.avail_in = static_cast<uInt>(text.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&zs, Z_FINISH), Z_STREAM_END);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

using quartet::testing::error_of;

TEST(Gzip, ReadsEveryMemberOfAConcatenatedFile) {
  // `cat a.gz b.gz > c.gz`, pigz and bgzip all make files like this; gzip -d reads them whole.
  const std::string data = gzip_member("hello ") + gzip_member("") + gzip_member("multi-member ") + gzip_member("world");
  EXPECT_EQ(gunzip(data, "x.gz"), "hello multi-member world");
}

TEST(Gzip, ReadsAMultiMemberFileFromDisk) {
  testing::TempDir dir;
  const auto path = dir.path() / "corpus.txt.gz";
  std::string expected, data;
  for (int i = 0; i < 50; ++i) {
    const std::string part = "member " + std::to_string(i) + std::string(3000, static_cast<char>('a' + i % 26));
    expected += part;
    data += gzip_member(part);
  }
  write_file_atomic(path, data);
  EXPECT_EQ(read_text_file(path), expected);
}

TEST(Gzip, RefusesTrailingGarbage) {
  const std::string message = error_of([] { gunzip(gzip_member("text") + "junk", "corpus.gz"); });
  EXPECT_NE(message.find("corpus.gz"), std::string::npos) << message;
  EXPECT_NE(message.find("4 bytes of trailing data"), std::string::npos) << message;
  // Zero padding is trailing garbage too (gzip(1) only warns; we refuse).
  EXPECT_NE(error_of([] { gunzip(gzip_member("text") + std::string(16, '\0'), "padded.gz"); }).find("trailing"),
            std::string::npos);
  // Something that starts like a member but is not one.
  EXPECT_NE(error_of([] { gunzip(gzip_member("text") + "\x1f\x8bxxxxxxxxxxxxxxxx", "fake.gz"); }).find("member 2"),
            std::string::npos);
}

TEST(Gzip, RefusesTruncatedAndEmptyData) {
  const std::string whole = gzip_member(std::string(10000, 'q') + "end");
  for (std::size_t cut : {whole.size() - 1, whole.size() - 8, whole.size() / 2, std::size_t{5}}) {
    const std::string message = error_of([&] { gunzip(whole.substr(0, cut), "cut.gz"); });
    EXPECT_NE(message.find("cut.gz"), std::string::npos) << message;
  }
  const std::string second_cut = whole + whole.substr(0, whole.size() - 3);
  EXPECT_NE(error_of([&] { gunzip(second_cut, "two.gz"); }).find("member 2"), std::string::npos);
  EXPECT_NE(error_of([] { gunzip("", "empty.gz"); }).find("empty.gz is empty"), std::string::npos);
  EXPECT_THROW(gunzip("not gzip at all", "x"), Error);
}

TEST(Gzip, CapsTheDecompressedSize) {
  // 10 MB of zeros compress to ~10 KB: the shape of a decompression bomb.
  const std::string bomb = gzip_member(std::string(10'000'000, '\0'));
  ASSERT_LT(bomb.size(), 20'000u);
  const std::string message = error_of([&] { gunzip(bomb, "bomb.gz", 1'000'000); });
  EXPECT_NE(message.find("bomb.gz"), std::string::npos) << message;
  EXPECT_NE(message.find("1000000"), std::string::npos) << message;
  // The cap counts every member together.
  const std::string two = gzip_member(std::string(600'000, 'a')) + gzip_member(std::string(600'000, 'b'));
  EXPECT_THROW(gunzip(two, "two.gz", 1'000'000), Error);
  // Exactly at the cap is allowed.
  EXPECT_EQ(gunzip(two, "two.gz", 1'200'000).size(), 1'200'000u);
  // The file reader passes its cap on.
  testing::TempDir dir;
  write_file_atomic(dir.path() / "bomb.txt.gz", bomb);
  EXPECT_THROW(read_text_file(dir.path() / "bomb.txt.gz", 1'000'000), Error);
  EXPECT_EQ(read_text_file(dir.path() / "bomb.txt.gz").size(), 10'000'000u);  // under the default cap
}

TEST(Files, AFolderIsNotAFile) {
  testing::TempDir dir;
  const std::string message = error_of([&] { read_text_file(dir.path()); });
  EXPECT_NE(message.find(dir.str()), std::string::npos) << message;
  EXPECT_NE(message.find("is a folder"), std::string::npos) << message;
  EXPECT_THROW(read_file(dir.path()), Error);
}

}  // namespace
}  // namespace quartet

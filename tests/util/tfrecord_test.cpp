#include "quartet/util/tfrecord.h"

#include <gtest/gtest.h>

#include <string>

#include "support/error_of.h"

namespace quartet {
namespace {

using testing::error_of;

std::string bytes_of(std::initializer_list<unsigned> values) {
  std::string s;
  for (unsigned v : values) s += static_cast<char>(v);
  return s;
}

// "abc": length 3 as 8 little-endian bytes, their masked CRC-32C, the data, its masked CRC-32C.
// The CRCs were computed outside this code base with a bit-by-bit CRC-32C (polynomial
// 0x82F63B78) checked against crc32c("123456789") = 0xE3069283, then masked by hand.
const std::string kAbcRecord = bytes_of({0x03, 0, 0, 0, 0, 0, 0, 0, 0xB0, 0x99, 0x49, 0x0E}) + "abc" +
                               bytes_of({0x6E, 0x57, 0xF1, 0x21});

TEST(TfRecord, FramesDataAsPublished) { EXPECT_EQ(tfrecord_frame("abc"), kAbcRecord); }

TEST(TfRecord, ReadsBackEveryRecord) {
  const std::string file = tfrecord_frame("abc") + tfrecord_frame("") + tfrecord_frame(std::string(300, 'x'));
  const auto records = read_tfrecords(file, "f");
  ASSERT_EQ(records.size(), 3u);
  EXPECT_EQ(records[0], "abc");
  EXPECT_EQ(records[1], "");
  EXPECT_EQ(records[2], std::string(300, 'x'));
  EXPECT_TRUE(read_tfrecords("", "f").empty());
}

TEST(TfRecord, AFlippedDataByteIsACorruptDataCrc) {
  std::string file = tfrecord_frame("first") + kAbcRecord;
  file[file.size() - 5] ^= 0x01;  // the 'c' of the second record
  const std::string e = error_of([&] { read_tfrecords(file, "run/events"); });
  EXPECT_NE(e.find("run/events: record 2 at byte 21"), std::string::npos) << e;
  EXPECT_NE(e.find("data's CRC is 0x21f1576e"), std::string::npos) << e;
  EXPECT_NE(e.find("corrupt"), std::string::npos) << e;
}

TEST(TfRecord, AFlippedLengthByteIsACorruptLengthCrc) {
  std::string file = kAbcRecord;
  file[0] = 0x04;
  const std::string e = error_of([&] { read_tfrecords(file, "f"); });
  EXPECT_NE(e.find("record 1 at byte 0: the length's CRC is 0x0e4999b0"), std::string::npos) << e;
}

TEST(TfRecord, AStoredCrcThatIsWrongIsCorruptToo) {
  std::string file = kAbcRecord;
  file.back() ^= 0x40;
  EXPECT_NE(error_of([&] { read_tfrecords(file, "f"); }).find("data's CRC"), std::string::npos);
}

TEST(TfRecord, EveryTruncationIsNamed) {
  const std::string file = tfrecord_frame("first") + kAbcRecord;
  // Every cut that is not at a record boundary (21 = the end of the first record) is an error.
  for (std::size_t cut = 1; cut < file.size(); ++cut) {
    if (cut == 21) continue;
    const std::string e = error_of([&] { read_tfrecords(std::string_view(file).substr(0, cut), "f"); });
    EXPECT_NE(e.find("truncated"), std::string::npos) << "cut at " << cut << ": " << e;
  }
  EXPECT_EQ(read_tfrecords(std::string_view(file).substr(0, 21), "f").size(), 1u);
}

TEST(TfRecord, AHugeLengthWithAValidCrcIsTruncationNotAnAllocation) {
  // Length 2^64 - 1 with its correct masked CRC: the reader must compare, not add or allocate.
  std::string file(8, '\xFF');
  // The masked CRC of eight 0xFF bytes (computed like kAbcRecord's).
  file += bytes_of({0xA6, 0x7B, 0x11, 0x3A});
  file += "data";
  const std::string e = error_of([&] { read_tfrecords(file, "f"); });
  EXPECT_NE(e.find("declares 18446744073709551615 bytes"), std::string::npos) << e;
}

}  // namespace
}  // namespace quartet

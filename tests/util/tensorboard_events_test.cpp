#include "quartet/util/tensorboard_events.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <string>

#include "quartet/util/files.h"
#include "quartet/util/protobuf_wire.h"
#include "quartet/util/tfrecord.h"
#include "support/error_of.h"
#include "support/temp_dir.h"

namespace quartet {
namespace {

using testing::error_of;
using testing::TempDir;

std::string bytes_of(std::initializer_list<unsigned> values) {
  std::string s;
  for (unsigned v : values) s += static_cast<char>(v);
  return s;
}

// Event{wall_time: 1.5, step: 3, summary {value {tag: "a", simple_value: 2.0}}}, encoded by hand:
//   09 <1.5 as a little-endian double: 00 00 00 00 00 00 F8 3F>   field 1, wire type 1
//   10 03                                                           field 2, varint 3
//   2A 0A  <Summary, 10 bytes>                                      field 5, length 10
//     0A 08  <Value, 8 bytes>                                       Summary.value, length 8
//       0A 01 'a'                                                   Value.tag
//       15 <2.0f: 00 00 00 40>                                      Value.simple_value, wire type 5
const std::string kScalarEvent = bytes_of({0x09, 0, 0, 0, 0, 0, 0, 0xF8, 0x3F, 0x10, 0x03, 0x2A, 0x0A, 0x0A, 0x08,
                                           0x0A, 0x01, 'a', 0x15, 0, 0, 0, 0x40});

TensorBoardEvent scalar_event() {
  TensorBoardEvent e;
  e.wall_time = 1.5;
  e.step = 3;
  e.scalars.push_back({"a", 2.0f});
  return e;
}

TEST(TensorBoardEvents, EncodesAScalarEventAsDerivedByHand) { EXPECT_EQ(encode_event(scalar_event()), kScalarEvent); }

// The whole record of that event: length 23, the masked CRCs computed outside this code base
// (bit-by-bit CRC-32C checked against the published check value, then masked).
TEST(TensorBoardEvents, AWholeRecordMatchesBytesDerivedByHand) {
  const std::string expected = bytes_of({0x17, 0, 0, 0, 0, 0, 0, 0, 0xE7, 0xCE, 0xF8, 0x1E}) + kScalarEvent +
                               bytes_of({0xE8, 0x1C, 0x3A, 0x9D});
  EXPECT_EQ(tfrecord_frame(encode_event(scalar_event())), expected);
}

TEST(TensorBoardEvents, FileVersionAndSessionStartAndLongVarints) {
  TensorBoardEvent version;
  version.wall_time = 1000.25;  // 0x408F420000000000
  version.file_version = "brain.Event:2";
  EXPECT_EQ(encode_event(version),
            bytes_of({0x09, 0, 0, 0, 0, 0, 0x42, 0x8F, 0x40, 0x1A, 0x0D}) + "brain.Event:2");
  TensorBoardEvent restart;
  restart.step = 300;  // varint AC 02
  restart.session_start = true;
  EXPECT_EQ(encode_event(restart), bytes_of({0x09, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0xAC, 0x02, 0x3A, 0x02, 0x08, 0x01}));
  TensorBoardEvent negative;
  negative.step = -1;  // two's complement: ten bytes
  EXPECT_EQ(encode_event(negative).substr(9),
            bytes_of({0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01}));
}

TEST(TensorBoardEvents, DecodesWhatItEncodesAndSkipsUnknownFields) {
  TensorBoardEvent e = decode_event(kScalarEvent + bytes_of({0x22, 0x02, 0x01, 0x02}), "x");  // + field 4, skipped
  EXPECT_EQ(e.wall_time, 1.5);
  EXPECT_EQ(e.step, 3);
  ASSERT_EQ(e.scalars.size(), 1u);
  EXPECT_EQ(e.scalars[0].tag, "a");
  EXPECT_EQ(e.scalars[0].value, 2.0f);
  EXPECT_FALSE(e.session_start);
  TensorBoardEvent r;
  r.step = -7;
  r.session_start = true;
  r.scalars = {{"train/loss", 5.25f}, {"val/loss", std::nanf("")}};
  const TensorBoardEvent back = decode_event(encode_event(r), "x");
  EXPECT_EQ(back.step, -7);
  EXPECT_TRUE(back.session_start);
  ASSERT_EQ(back.scalars.size(), 2u);
  EXPECT_EQ(back.scalars[0].value, 5.25f);
  EXPECT_TRUE(std::isnan(back.scalars[1].value));
}

TEST(TensorBoardEvents, MalformedMessagesAreNamedErrors) {
  const auto err = [](const std::string& bytes) { return error_of([&] { decode_event(bytes, "f: record 2"); }); };
  EXPECT_NE(err(bytes_of({0x08, 0x05})).find("f: record 2: field 1 at byte 0 is varint, expected 64-bit (a double)"),
            std::string::npos);
  EXPECT_NE(err(bytes_of({0x10, 0x80})).find("cut off by the end of the message"), std::string::npos);
  EXPECT_NE(err(bytes_of({0x1A, 0x05, 'a'})).find("field 3 at byte 0 needs 5 bytes, but only 1 remain"),
            std::string::npos);
  EXPECT_NE(err(bytes_of({0x0B})).find("wire type 3, expected 0, 1, 2 or 5"), std::string::npos);
  EXPECT_NE(err(bytes_of({0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F}))
                .find("longer than a 64-bit varint"),
            std::string::npos);
  EXPECT_NE(err(bytes_of({0x00, 0x00})).find("field number 0"), std::string::npos);
  // Inside the summary: a value that is not a message.
  EXPECT_NE(err(bytes_of({0x2A, 0x02, 0x0D, 0x01})).find("f: record 2, summary"), std::string::npos);
}

TEST(TensorBoardEvents, WriterNamesTheFileAndStartsWithTheVersion) {
  TempDir dir;
  const std::filesystem::path folder = dir.path() / "tb";
  std::filesystem::path first;
  {
    EventsFileWriter w(folder, 1000.25);
    w.write(scalar_event());
    first = w.path();
  }
  const std::string name = first.filename().string();
  EXPECT_EQ(name.rfind("events.out.tfevents.1000.", 0), 0u) << name;
  EXPECT_EQ(name.substr(name.rfind('.') + 1), std::to_string(::getpid())) << name;
  const auto records = read_tfrecords(read_file(first), "f");
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[0], bytes_of({0x09, 0, 0, 0, 0, 0, 0x42, 0x8F, 0x40, 0x1A, 0x0D}) + "brain.Event:2");
  EXPECT_EQ(records[1], kScalarEvent);
  const auto events = read_events_file(first);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].file_version, "brain.Event:2");
  EXPECT_EQ(events[1].step, 3);
}

TEST(TensorBoardEvents, ALaterFileAlwaysSortsAfterTheEarlierOnes) {
  TempDir dir;
  const std::filesystem::path a = EventsFileWriter(dir.path(), 1000.9).path();
  const std::filesystem::path b = EventsFileWriter(dir.path(), 1000.1).path();  // same second, or a clock behind
  const std::filesystem::path c = EventsFileWriter(dir.path(), 5000.0).path();
  EXPECT_EQ(b.filename().string().rfind("events.out.tfevents.1001.", 0), 0u) << b;
  EXPECT_EQ(c.filename().string().rfind("events.out.tfevents.5000.", 0), 0u) << c;
  EXPECT_LT(a.filename(), b.filename());
  EXPECT_LT(b.filename(), c.filename());
}

TEST(TensorBoardEvents, ReaderRefusesMissingEmptyCorruptAndVersionlessFiles) {
  TempDir dir;
  const std::filesystem::path f = dir.path() / "events.out.tfevents.1.h.1";
  EXPECT_NE(error_of([&] { read_events_file(f); }).find("no such file"), std::string::npos);
  write_file_atomic(f, "");
  EXPECT_NE(error_of([&] { read_events_file(f); }).find(f.string() + ": empty"), std::string::npos);
  write_file_atomic(f, tfrecord_frame(kScalarEvent));
  EXPECT_NE(error_of([&] { read_events_file(f); }).find("the first record is not the file-version event"),
            std::string::npos);
  std::string good = tfrecord_frame(encode_event({.wall_time = 1, .file_version = "brain.Event:2"})) +
                     tfrecord_frame(kScalarEvent);
  std::string bad = good;
  bad[bad.size() - 6] ^= 0x20;
  write_file_atomic(f, bad);
  const std::string e = error_of([&] { read_events_file(f); });
  EXPECT_NE(e.find(f.string() + ": record 2 at byte"), std::string::npos) << e;
  EXPECT_NE(e.find("corrupt"), std::string::npos) << e;
  write_file_atomic(f, good.substr(0, good.size() - 3));
  EXPECT_NE(error_of([&] { read_events_file(f); }).find("truncated"), std::string::npos);
  write_file_atomic(f, good);
  EXPECT_EQ(read_events_file(f).size(), 2u);
}

}  // namespace
}  // namespace quartet

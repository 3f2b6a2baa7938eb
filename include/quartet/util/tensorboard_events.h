// TensorBoard event files, written and read without TensorFlow: TFRecord files (tfrecord.h) of
// serialized tensorflow.Event messages (tensorflow/core/util/event.proto), of which only the
// fields TensorBoard's scalar charts use are written:
//   Event      { double wall_time = 1; int64 step = 2; string file_version = 3;
//                Summary summary = 5; SessionLog session_log = 7 }  (6 is the deprecated log_message)
//   Summary    { repeated Value value = 1; }
//   Value      { string tag = 1; float simple_value = 2; }
//   SessionLog { Status status = 1; }   (START = 1: the run (re)started at `step`)
// TensorBoard finds every file named events.out.tfevents.* in a folder and reads them in name
// order, as one stream.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace quartet {

class AppendFile;

struct TensorBoardScalar {
  std::string tag;
  float value = 0;  // simple_value is a float: values keep about 7 significant digits
};

struct TensorBoardEvent {
  double wall_time = 0;  // Unix seconds
  std::int64_t step = 0;
  std::string file_version;                // a file's first event: kEventsFileVersion; else empty
  std::vector<TensorBoardScalar> scalars;  // the summary's values
  // A SessionLog START: TensorBoard's event reader then drops the data it already holds at
  // this step and later (a resumed run repeats the steps after its checkpoint).
  bool session_start = false;
};

inline constexpr std::string_view kEventsFileVersion = "brain.Event:2";
inline constexpr std::string_view kEventsFilePrefix = "events.out.tfevents.";

// The serialized Event: fields in number order, wall_time always, the others only when set
// (a zero step, like protobuf's own writer, is left out).
std::string encode_event(const TensorBoardEvent& event);

// Parses a serialized Event; fields and summary values it does not know (images, histograms,
// tensors) are skipped. Throws Error naming `what` on malformed bytes.
TensorBoardEvent decode_event(std::string_view bytes, const std::string& what);

// A new events file, for one process's part of a run. Records are appended with one write(2)
// each, so a crash tears at most the last one.
class EventsFileWriter {
 public:
  // Creates `folder` if needed and in it events.out.tfevents.<unix seconds>.<hostname>.<pid>,
  // whose first record is the file-version event. The seconds are `wall_time`'s, raised if
  // needed above those of every events file already there, so that the name order TensorBoard
  // reads them in is the order they were written in. Throws Error naming the file.
  EventsFileWriter(const std::filesystem::path& folder, double wall_time);
  ~EventsFileWriter();
  EventsFileWriter(const EventsFileWriter&) = delete;
  EventsFileWriter& operator=(const EventsFileWriter&) = delete;

  void write(const TensorBoardEvent& event);  // throws Error naming the file
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  std::unique_ptr<AppendFile> file_;
};

// Every event of an events file, checking the framing and CRCs of each record (tfrecord.h) and
// that the first event is the file-version event. Throws Error naming the file, the record and
// what is wrong (missing, empty, truncated, a wrong CRC, a malformed Event).
std::vector<TensorBoardEvent> read_events_file(const std::filesystem::path& path);

}  // namespace quartet

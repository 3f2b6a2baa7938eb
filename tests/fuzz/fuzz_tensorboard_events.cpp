// libFuzzer target: TFRecord framing and tensorflow.Event decoding on arbitrary bytes (what
// read_events_file does after reading the file). Every failure must be an Error; a record's
// length near 2^64 must be refused, never allocated or added to an offset.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "quartet/error.h"
#include "quartet/util/tensorboard_events.h"
#include "quartet/util/tfrecord.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  try {
    for (const std::string& record : quartet::read_tfrecords(bytes, "fuzz")) quartet::decode_event(record, "fuzz");
  } catch (const quartet::Error&) {
  }
  // The same bytes as one Event, so the decoder is reached without valid CRCs too.
  try {
    quartet::decode_event(bytes, "fuzz");
  } catch (const quartet::Error&) {
  }
  return 0;
}

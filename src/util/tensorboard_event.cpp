// encode_event and decode_event (tensorboard_events.h).
#include <fmt/format.h>

#include "quartet/error.h"
#include "quartet/util/protobuf_wire.h"
#include "quartet/util/tensorboard_events.h"

namespace quartet {

namespace {

// Field numbers of event.proto and summary.proto.
constexpr std::uint32_t kWallTime = 1, kStep = 2, kFileVersion = 3, kSummary = 5, kSessionLog = 7;
constexpr std::uint32_t kSummaryValue = 1;
constexpr std::uint32_t kValueTag = 1, kValueSimpleValue = 2;
constexpr std::uint32_t kSessionLogStatus = 1;
constexpr std::uint64_t kSessionLogStart = 1;

}  // namespace

std::string encode_event(const TensorBoardEvent& event) {
  ProtoWriter e;
  e.double_field(kWallTime, event.wall_time);
  if (event.step != 0) e.int64_field(kStep, event.step);
  if (!event.file_version.empty()) e.bytes_field(kFileVersion, event.file_version);
  if (!event.scalars.empty()) {
    ProtoWriter summary;
    for (const TensorBoardScalar& s : event.scalars) {
      ProtoWriter value;
      value.bytes_field(kValueTag, s.tag);
      value.float_field(kValueSimpleValue, s.value);
      summary.bytes_field(kSummaryValue, value.bytes());
    }
    e.bytes_field(kSummary, summary.bytes());
  }
  if (event.session_start) {
    ProtoWriter log;
    log.varint_field(kSessionLogStatus, kSessionLogStart);
    e.bytes_field(kSessionLog, log.bytes());
  }
  return e.bytes();
}

TensorBoardEvent decode_event(std::string_view bytes, const std::string& what) {
  TensorBoardEvent event;
  ProtoReader r(bytes, what);
  for (ProtoField f; r.next(f);) {
    if (f.number == kWallTime) {
      event.wall_time = r.as_double(f);
    } else if (f.number == kStep) {
      event.step = r.as_int64(f);
    } else if (f.number == kFileVersion) {
      event.file_version = std::string(r.as_bytes(f));
    } else if (f.number == kSummary) {
      ProtoReader summary(r.as_bytes(f), what + ", summary");
      for (ProtoField v; summary.next(v);) {
        if (v.number != kSummaryValue) continue;
        ProtoReader value(summary.as_bytes(v), fmt::format("{}, summary value {}", what, event.scalars.size() + 1));
        TensorBoardScalar s;
        bool scalar = false;
        for (ProtoField x; value.next(x);) {
          if (x.number == kValueTag) s.tag = std::string(value.as_bytes(x));
          if (x.number == kValueSimpleValue) {
            s.value = value.as_float(x);
            scalar = true;
          }
        }
        if (scalar) event.scalars.push_back(std::move(s));
      }
    } else if (f.number == kSessionLog) {
      ProtoReader log(r.as_bytes(f), what + ", session_log");
      for (ProtoField x; log.next(x);) {
        if (x.number == kSessionLogStatus && log.as_int64(x) == static_cast<std::int64_t>(kSessionLogStart)) {
          event.session_start = true;
        }
      }
    }
  }
  return event;
}

}  // namespace quartet

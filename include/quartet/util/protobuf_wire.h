// The protocol-buffer wire format, just enough of it for TensorBoard's Event messages: varints,
// 64- and 32-bit fixed fields and length-delimited fields (strings and nested messages). Five
// fields of a stable, published schema do not justify protoc, TensorFlow's .proto files and
// libprotobuf in the build.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace quartet {

// Wire types (https://protobuf.dev/programming-guides/encoding/); groups (3, 4) are not read.
enum class WireType : int { kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5 };

// Appends fields to a message, in the order written.
class ProtoWriter {
 public:
  void varint_field(std::uint32_t field, std::uint64_t value);
  // int64 fields: negative values as their two's complement (ten bytes), as protobuf does.
  void int64_field(std::uint32_t field, std::int64_t value) { varint_field(field, static_cast<std::uint64_t>(value)); }
  void double_field(std::uint32_t field, double value);
  void float_field(std::uint32_t field, float value);
  // A string, bytes or an already encoded nested message.
  void bytes_field(std::uint32_t field, std::string_view value);
  const std::string& bytes() const { return out_; }

 private:
  void varint(std::uint64_t value);
  void tag(std::uint32_t field, WireType type);
  std::string out_;
};

// One field as read: the fixed-size values' raw little-endian bytes and a length-delimited
// field's contents are in `bytes`, a varint's value in `varint`.
struct ProtoField {
  std::uint32_t number = 0;
  WireType type = WireType::kVarint;
  std::uint64_t varint = 0;
  std::string_view bytes;
  std::size_t offset = 0;  // where the field's tag starts in the message
};

// Reads the fields of one message in order. Every error is an Error naming `what` (e.g.
// "events.out... record 3, summary"), the byte offset and what was found.
class ProtoReader {
 public:
  ProtoReader(std::string_view message, std::string what) : message_(message), what_(std::move(what)) {}
  // The next field, or false at the end of the message. Throws on a truncated varint, a length
  // past the end, field number 0 or a wire type other than 0, 1, 2 or 5.
  bool next(ProtoField& field);

  // The value of `field` as the type the schema gives it; a field of another wire type is an
  // Error naming the field.
  double as_double(const ProtoField& field) const;
  float as_float(const ProtoField& field) const;
  std::int64_t as_int64(const ProtoField& field) const;
  std::string_view as_bytes(const ProtoField& field) const;
  const std::string& what() const { return what_; }

 private:
  std::uint64_t varint(const char* which);
  void expect(const ProtoField& field, WireType type, const char* as) const;
  std::string_view message_;
  std::string what_;
  std::size_t at_ = 0;
};

}  // namespace quartet

#include "quartet/util/protobuf_wire.h"

#include <fmt/format.h>

#include <bit>
#include <cstring>

#include "quartet/error.h"

namespace quartet {

namespace {

static_assert(std::endian::native == std::endian::little, "fixed-size fields are copied as little-endian bytes");

const char* wire_type_name(WireType t) {
  switch (t) {
    case WireType::kVarint: return "varint";
    case WireType::kFixed64: return "64-bit";
    case WireType::kLengthDelimited: return "length-delimited";
    case WireType::kFixed32: return "32-bit";
  }
  return "?";
}

}  // namespace

void ProtoWriter::varint(std::uint64_t value) {
  while (value >= 0x80) {
    out_ += static_cast<char>((value & 0x7F) | 0x80);
    value >>= 7;
  }
  out_ += static_cast<char>(value);
}

void ProtoWriter::tag(std::uint32_t field, WireType type) {
  varint((static_cast<std::uint64_t>(field) << 3) | static_cast<std::uint64_t>(type));
}

void ProtoWriter::varint_field(std::uint32_t field, std::uint64_t value) {
  tag(field, WireType::kVarint);
  varint(value);
}

void ProtoWriter::double_field(std::uint32_t field, double value) {
  tag(field, WireType::kFixed64);
  char raw[8];
  std::memcpy(raw, &value, 8);
  out_.append(raw, 8);
}

void ProtoWriter::float_field(std::uint32_t field, float value) {
  tag(field, WireType::kFixed32);
  char raw[4];
  std::memcpy(raw, &value, 4);
  out_.append(raw, 4);
}

void ProtoWriter::bytes_field(std::uint32_t field, std::string_view value) {
  tag(field, WireType::kLengthDelimited);
  varint(value.size());
  out_.append(value);
}

std::uint64_t ProtoReader::varint(const char* which) {
  const std::size_t start = at_;
  std::uint64_t value = 0;
  // At most ten bytes carry the 64 bits; the tenth may hold only the top bit.
  for (int shift = 0; shift < 64; shift += 7) {
    if (at_ >= message_.size()) {
      throw Error(fmt::format("{}: the {} at byte {} is cut off by the end of the message ({} bytes)", what_, which,
                              start, message_.size()));
    }
    const auto byte = static_cast<unsigned char>(message_[at_++]);
    if (shift == 63 && byte > 1) break;
    value |= static_cast<std::uint64_t>(byte & 0x7F) << shift;
    if ((byte & 0x80) == 0) return value;
  }
  throw Error(fmt::format("{}: the {} at byte {} is longer than a 64-bit varint (10 bytes)", what_, which, start));
}

bool ProtoReader::next(ProtoField& field) {
  if (at_ >= message_.size()) return false;
  field = ProtoField();
  field.offset = at_;
  const std::uint64_t tag = varint("field tag");
  const std::uint64_t number = tag >> 3;
  const auto type = static_cast<int>(tag & 7);
  if (number == 0 || number > 0x1FFFFFFF) {
    throw Error(fmt::format("{}: field number {} at byte {} (field numbers are 1 to 536870911)", what_, number,
                            field.offset));
  }
  field.number = static_cast<std::uint32_t>(number);
  const auto take = [&](std::uint64_t n) {
    if (n > message_.size() - at_) {
      throw Error(fmt::format("{}: field {} at byte {} needs {} bytes, but only {} remain in the message", what_,
                              number, field.offset, n, message_.size() - at_));
    }
    field.bytes = message_.substr(at_, static_cast<std::size_t>(n));
    at_ += static_cast<std::size_t>(n);
  };
  switch (type) {
    case 0: field.type = WireType::kVarint; field.varint = varint("varint value"); break;
    case 1: field.type = WireType::kFixed64; take(8); break;
    case 2: field.type = WireType::kLengthDelimited; take(varint("length")); break;
    case 5: field.type = WireType::kFixed32; take(4); break;
    default:
      throw Error(fmt::format("{}: field {} at byte {} has wire type {}, expected 0, 1, 2 or 5", what_, number,
                              field.offset, type));
  }
  return true;
}

void ProtoReader::expect(const ProtoField& field, WireType type, const char* as) const {
  if (field.type != type) {
    throw Error(fmt::format("{}: field {} at byte {} is {}, expected {} ({})", what_, field.number, field.offset,
                            wire_type_name(field.type), wire_type_name(type), as));
  }
}

double ProtoReader::as_double(const ProtoField& field) const {
  expect(field, WireType::kFixed64, "a double");
  double v = 0;
  std::memcpy(&v, field.bytes.data(), 8);
  return v;
}

float ProtoReader::as_float(const ProtoField& field) const {
  expect(field, WireType::kFixed32, "a float");
  float v = 0;
  std::memcpy(&v, field.bytes.data(), 4);
  return v;
}

std::int64_t ProtoReader::as_int64(const ProtoField& field) const {
  expect(field, WireType::kVarint, "an int64");
  return static_cast<std::int64_t>(field.varint);
}

std::string_view ProtoReader::as_bytes(const ProtoField& field) const {
  expect(field, WireType::kLengthDelimited, "a string or message");
  return field.bytes;
}

}  // namespace quartet

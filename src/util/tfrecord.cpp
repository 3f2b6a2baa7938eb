#include "quartet/util/tfrecord.h"

#include <fmt/format.h>

#include <cstdint>

#include "quartet/error.h"
#include "quartet/util/crc32c.h"

namespace quartet {

namespace {

constexpr std::size_t kHeader = 12;  // length and its CRC
constexpr std::size_t kFooter = 4;   // the data's CRC

void put_le(std::string& out, std::uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) out += static_cast<char>((value >> (8 * i)) & 0xFF);
}

std::uint64_t get_le(std::string_view in, int bytes) {
  std::uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(in[static_cast<std::size_t>(i)]);
  return v;
}

}  // namespace

std::string tfrecord_frame(std::string_view data) {
  std::string out;
  out.reserve(kHeader + data.size() + kFooter);
  put_le(out, data.size(), 8);
  put_le(out, masked_crc32c(out), 4);
  out.append(data);
  put_le(out, masked_crc32c(data), 4);
  return out;
}

std::vector<std::string> read_tfrecords(std::string_view file, const std::string& what) {
  std::vector<std::string> records;
  for (std::size_t at = 0; at < file.size();) {
    const std::size_t number = records.size() + 1;
    const auto where = [&] { return fmt::format("{}: record {} at byte {}", what, number, at); };
    if (file.size() - at < kHeader) {
      throw Error(fmt::format("{}: the file ends {} bytes into the record's 12-byte header (truncated)", where(),
                              file.size() - at));
    }
    const std::string_view length_bytes = file.substr(at, 8);
    const std::uint64_t length = get_le(length_bytes, 8);
    const auto length_crc = static_cast<std::uint32_t>(get_le(file.substr(at + 8, 4), 4));
    if (length_crc != masked_crc32c(length_bytes)) {
      throw Error(fmt::format("{}: the length's CRC is {:#010x}, but the length bytes give {:#010x} (corrupt)", where(),
                              length_crc, masked_crc32c(length_bytes)));
    }
    // Compared without adding to `length`, which may be anything up to 2^64 - 1.
    const std::size_t left = file.size() - at - kHeader;
    if (length > left || left - length < kFooter) {
      throw Error(fmt::format("{}: the header declares {} bytes of data and a 4-byte CRC, but only {} bytes follow "
                              "it (truncated)",
                              where(), length, left));
    }
    const std::string_view data = file.substr(at + kHeader, static_cast<std::size_t>(length));
    const auto data_crc = static_cast<std::uint32_t>(get_le(file.substr(at + kHeader + data.size(), 4), 4));
    if (data_crc != masked_crc32c(data)) {
      throw Error(fmt::format("{}: the data's CRC is {:#010x}, but its {} bytes give {:#010x} (corrupt)", where(),
                              data_crc, data.size(), masked_crc32c(data)));
    }
    records.emplace_back(data);
    at += kHeader + data.size() + kFooter;
  }
  return records;
}

}  // namespace quartet

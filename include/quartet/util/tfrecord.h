// TFRecord framing, the container of TensorBoard event files: each record is
//   uint64 length (little-endian) | uint32 masked CRC-32C of those 8 bytes |
//   `length` bytes of data       | uint32 masked CRC-32C of the data
// (crc32c.h for the mask).
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace quartet {

// The framed record holding `data`.
std::string tfrecord_frame(std::string_view data);

// The data of every record in `file_bytes`, checking each length CRC and data CRC. Throws Error
// naming `what` (the file), the record's number (from 1) and byte offset, and what was found:
// a wrong CRC (the stored and the computed value), or a file that ends inside a record.
std::vector<std::string> read_tfrecords(std::string_view file_bytes, const std::string& what);

}  // namespace quartet

// CRC-32C (Castagnoli), the checksum of TFRecord files (TensorBoard event files). zlib only
// has the IEEE CRC-32, and libcrc32c would be a new dependency on every machine for a
// 256-entry table, so it is computed here.
#pragma once

#include <cstdint>
#include <string_view>

namespace quartet {

// CRC-32C of `bytes` (reflected polynomial 0x82F63B78, initial value and final xor 0xFFFFFFFF);
// crc32c("123456789") is 0xE3069283.
std::uint32_t crc32c(std::string_view bytes);

// TFRecord's "masked" CRC: rotated right by 15 bits plus a constant, so that a CRC stored
// inside data that is itself checksummed does not make the outer CRC degenerate.
std::uint32_t masked_crc32c(std::string_view bytes);

}  // namespace quartet

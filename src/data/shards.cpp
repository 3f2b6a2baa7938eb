#include "quartet/data/shards.h"

#include <fmt/format.h>

#include <bit>
#include <cstring>

#include "quartet/error.h"
#include "quartet/util/files.h"

namespace quartet {

namespace {

// The project targets little-endian machines (x86-64 and the GPUs' hosts); the format is
// little-endian, so plain copies are the encoding.
static_assert(std::endian::native == std::endian::little, "shards are little-endian");

}  // namespace

void write_shard(const std::filesystem::path& path, std::span<const std::int32_t> tokens) {
  // The header's count is an int32: check before converting (and before allocating).
  if (tokens.size() > 0x7FFFFFFFu) {
    throw Error(fmt::format("{}: {} tokens do not fit in one shard (at most 2147483647)", path.string(), tokens.size()));
  }
  std::string bytes(kShardHeaderBytes + 2 * tokens.size(), '\0');
  const std::int32_t header[3] = {kShardMagic, kShardVersion, static_cast<std::int32_t>(tokens.size())};
  std::memcpy(bytes.data(), header, sizeof(header));
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] > 65535) {
      throw Error(fmt::format("{}: token {} at position {} does not fit in the shard format's uint16", path.string(),
                              tokens[i], i));
    }
    const auto t = static_cast<std::uint16_t>(tokens[i]);
    std::memcpy(bytes.data() + kShardHeaderBytes + 2 * i, &t, 2);
  }
  write_file_atomic(path, bytes);
}

std::vector<std::uint16_t> read_shard(const std::filesystem::path& path) {
  return parse_shard(read_file(path), path.string());
}

std::vector<std::uint16_t> parse_shard(std::string_view bytes, const std::string& what) {
  if (bytes.size() < kShardHeaderBytes) {
    throw Error(fmt::format("{}: {} bytes is shorter than the {}-byte shard header (truncated or not a shard)",
                            what, bytes.size(), kShardHeaderBytes));
  }
  std::int32_t header[3];
  std::memcpy(header, bytes.data(), sizeof(header));
  if (header[0] != kShardMagic) {
    throw Error(fmt::format("{}: magic number {} is not the shard magic {} (not an llm.c token shard)", what,
                            header[0], kShardMagic));
  }
  if (header[1] != kShardVersion) {
    throw Error(fmt::format("{}: shard version {} is not supported (expected {}: uint16 tokens)", what, header[1],
                            kShardVersion));
  }
  if (header[2] < 0) throw Error(fmt::format("{}: negative token count {} in the header", what, header[2]));
  const std::size_t expected = kShardHeaderBytes + 2 * static_cast<std::size_t>(header[2]);
  if (bytes.size() != expected) {
    throw Error(fmt::format("{}: the header announces {} tokens ({} bytes) but the file has {} bytes{}", what,
                            header[2], expected, bytes.size(), bytes.size() < expected ? " (truncated)" : ""));
  }
  std::vector<std::uint16_t> tokens(static_cast<std::size_t>(header[2]));
  // An empty shard is valid (prepare writes one for a split a tiny document leaves empty), and
  // then tokens.data() may be null: memcpy from or to null is undefined even for 0 bytes.
  if (!tokens.empty()) std::memcpy(tokens.data(), bytes.data() + kShardHeaderBytes, 2 * tokens.size());
  return tokens;
}

}  // namespace quartet

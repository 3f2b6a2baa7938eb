// Token shards in llm.c's format, so shards made by llm.c's scripts work here and ours there:
// a header of 256 little-endian int32 (magic 20240520, version 1, token count, rest 0), then
// the tokens as little-endian uint16.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace quartet {

inline constexpr std::int32_t kShardMagic = 20240520;
inline constexpr std::int32_t kShardVersion = 1;
inline constexpr std::size_t kShardHeaderBytes = 256 * 4;

// Writes atomically; throws Error for a token outside [0, 65535] (naming its position).
void write_shard(const std::filesystem::path& path, std::span<const std::int32_t> tokens);

// Throws Error naming the file and what is wrong (missing, truncated, bad magic or version,
// size not matching the header).
std::vector<std::uint16_t> read_shard(const std::filesystem::path& path);

// The same on bytes already in memory; `what` names them in messages.
std::vector<std::uint16_t> parse_shard(std::string_view bytes, const std::string& what);

}  // namespace quartet

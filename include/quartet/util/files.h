// File helpers with the guarantees checkpoints and shards need: a file is written to a
// temporary name, flushed to disk and renamed into place, so a crash leaves either the old
// file or the complete new one, never a torn one.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace quartet {

// Writes `bytes` to `path` atomically (temporary file in the same folder, fsync, rename,
// fsync of the folder). Throws Error naming the path on failure; the old file is untouched.
void write_file_atomic(const std::filesystem::path& path, std::string_view bytes);

// Reads a whole file; throws Error naming the path if it is missing or unreadable.
std::string read_file(const std::filesystem::path& path);

// The default cap on what one gzip input may decompress to. Decompression multiplies size by
// up to ~1000x, so without a cap a small crafted file could exhaust memory; 1 GiB is far above
// any input this program embeds or tests with, and `quartet prepare --max-input-bytes` raises it.
inline constexpr std::size_t kDefaultGunzipLimit = std::size_t{1} << 30;

// Decompresses gzip data: every member of a multi-member file (concatenated .gz, pigz, bgzip).
// Throws Error naming `what` if it is not valid gzip, is truncated, has trailing bytes that are
// not another member, or decompresses to more than `max_bytes`.
std::string gunzip(std::string_view data, const std::string& what, std::size_t max_bytes = kDefaultGunzipLimit);

// The file's contents, gunzipped (with that cap) if its name ends in .gz. A folder, a missing or
// an unreadable file is an Error naming the path.
std::string read_text_file(const std::filesystem::path& path, std::size_t max_gunzip_bytes = kDefaultGunzipLimit);

// fsync a folder so a rename inside it is durable.
void sync_directory(const std::filesystem::path& dir);

}  // namespace quartet

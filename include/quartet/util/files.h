// File helpers with the guarantees checkpoints and shards need: a file is written to a
// temporary name, flushed to disk and renamed into place, so a crash leaves either the old
// file or the complete new one, never a torn one.
#pragma once

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

// Decompresses gzip data (throws Error naming `what` if it is not valid gzip).
std::string gunzip(std::string_view data, const std::string& what);

// The file's contents, gunzipped if its name ends in .gz.
std::string read_text_file(const std::filesystem::path& path);

// fsync a folder so a rename inside it is durable.
void sync_directory(const std::filesystem::path& dir);

}  // namespace quartet

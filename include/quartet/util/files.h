// File helpers with the guarantees checkpoints and shards need: a file is written to a
// temporary name, flushed to disk and renamed into place, so a crash leaves either the old
// file or the complete new one, never a torn one.
//
// Every temporary name is ".<final name>.tmp-<pid>-<6 random characters>", created with
// O_CREAT|O_EXCL|O_NOFOLLOW (mkdir for folders): nobody can predict it, so nobody can plant a
// symlink there that would redirect the write, and an existing file is never opened. The pid
// lets a later run tell the leftovers of a killed process (remove_stale_temporaries) from the
// files of one still writing.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace quartet {

// Writes `bytes` to `path` atomically (fresh temporary file in the same folder, fsync, rename,
// fsync of the folder). Throws Error naming the path on failure; the old file is untouched.
void write_file_atomic(const std::filesystem::path& path, std::string_view bytes);

// A new empty folder ".<stem>.<kind>-<pid>-XXXXXX" inside `parent` (kind: "tmp" or "old"),
// created exclusively; throws Error naming it on failure.
std::filesystem::path make_temporary_folder(const std::filesystem::path& parent, std::string_view stem,
                                            std::string_view kind = "tmp");

// A file opened for appending lines (metrics.jsonl): created if missing, never through a
// symlink. Each line is written with one write(2) call, so a crash tears at most the last one.
class AppendFile {
 public:
  explicit AppendFile(const std::filesystem::path& path);  // throws Error naming the path
  ~AppendFile();
  AppendFile(const AppendFile&) = delete;
  AppendFile& operator=(const AppendFile&) = delete;
  void write(std::string_view bytes);  // throws Error naming the path

 private:
  std::filesystem::path path_;
  int fd_ = -1;
};

// Removes what killed processes of this program left in `dir`: entries named like our
// temporaries (see above, and the older ".<name>.tmp-<pid>" form) whose process is gone. Nothing
// else is touched, nor the temporaries of a live process. Returns what it removed.
std::vector<std::filesystem::path> remove_stale_temporaries(const std::filesystem::path& dir);

// Whether `name` is one plain path component: not empty, not "." or "..", no '/' and no NUL,
// so that `folder / name` is a child of `folder`.
bool is_plain_name(std::string_view name);

// Throws Error "<what> '<name>' must be a single plain name ..." unless is_plain_name(name).
void check_plain_name(std::string_view name, std::string_view what);

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

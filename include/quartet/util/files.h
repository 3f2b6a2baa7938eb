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

// Decompresses gzip data (throws Error naming `what` if it is not valid gzip).
std::string gunzip(std::string_view data, const std::string& what);

// The file's contents, gunzipped if its name ends in .gz.
std::string read_text_file(const std::filesystem::path& path);

// fsync a folder so a rename inside it is durable.
void sync_directory(const std::filesystem::path& dir);

}  // namespace quartet

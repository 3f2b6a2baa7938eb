#include "quartet/util/files.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <fmt/format.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <regex>

#include "quartet/error.h"

namespace quartet {

namespace {

std::string errno_text() { return std::strerror(errno); }

// Six characters from the kernel's random source: the unpredictable part of a temporary name.
std::string random_suffix() {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  unsigned char bytes[6];
  std::size_t got = 0;
  while (got < sizeof(bytes)) {
    const ssize_t n = ::getrandom(bytes + got, sizeof(bytes) - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw Error(fmt::format("cannot draw random bytes for a temporary name: {}", errno_text()));
    }
    got += static_cast<std::size_t>(n);
  }
  std::string s;
  for (unsigned char b : bytes) s += kAlphabet[b % (sizeof(kAlphabet) - 1)];
  return s;
}

std::filesystem::path temporary_name(const std::filesystem::path& dir, std::string_view stem, std::string_view kind) {
  return dir / fmt::format(".{}.{}-{}-{}", stem, kind, ::getpid(), random_suffix());
}

// Tries fresh names until `create` succeeds (it fails with EEXIST only if the name is taken:
// a planted file or symlink is skipped, never opened).
template <class Create>
std::filesystem::path create_exclusively(const std::filesystem::path& dir, std::string_view stem, std::string_view kind,
                                         Create create) {
  for (int attempt = 0; attempt < 100; ++attempt) {
    const std::filesystem::path candidate = temporary_name(dir, stem, kind);
    if (create(candidate)) return candidate;
    if (errno != EEXIST) throw Error(fmt::format("cannot create {}: {}", candidate.string(), errno_text()));
  }
  throw Error(fmt::format("cannot create a temporary name for {} in {}: every name tried exists", stem, dir.string()));
}

void write_all(int fd, std::string_view bytes, const std::filesystem::path& what) {
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw Error(fmt::format("cannot write {}: {}", what.string(), errno_text()));
    }
    done += static_cast<std::size_t>(n);
  }
}

bool process_is_gone(long pid) {
  if (pid <= 0 || pid == static_cast<long>(::getpid())) return false;
  return ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH;
}

}  // namespace

void sync_directory(const std::filesystem::path& dir) {
  const int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw Error(fmt::format("cannot open folder {}: {}", dir.string(), errno_text()));
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) throw Error(fmt::format("cannot sync folder {}: {}", dir.string(), errno_text()));
}

void write_file_atomic(const std::filesystem::path& path, std::string_view bytes) {
  const std::filesystem::path dir = path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
  int fd = -1;
  const std::filesystem::path tmp =
      create_exclusively(dir, path.filename().string(), "tmp", [&](const std::filesystem::path& candidate) {
        fd = ::open(candidate.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
        return fd >= 0;
      });
  try {
    write_all(fd, bytes, path);
    if (::fsync(fd) != 0) throw Error(fmt::format("cannot flush {}: {}", path.string(), errno_text()));
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  if (::close(fd) != 0) {
    const std::string why = errno_text();
    ::unlink(tmp.c_str());
    throw Error(fmt::format("cannot flush {}: {}", path.string(), why));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = errno_text();
    ::unlink(tmp.c_str());
    throw Error(fmt::format("cannot move {} into place: {}", path.string(), why));
  }
  sync_directory(dir);
}

std::filesystem::path make_temporary_folder(const std::filesystem::path& parent, std::string_view stem,
                                            std::string_view kind) {
  return create_exclusively(parent, stem, kind,
                            [](const std::filesystem::path& candidate) { return ::mkdir(candidate.c_str(), 0777) == 0; });
}

AppendFile::AppendFile(const std::filesystem::path& path) : path_(path) {
  fd_ = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0666);
  if (fd_ < 0) {
    throw Error(fmt::format("cannot open {} for appending: {}", path.string(),
                            errno == ELOOP ? "it is a symlink" : errno_text()));
  }
}

AppendFile::~AppendFile() {
  if (fd_ >= 0) ::close(fd_);
}

void AppendFile::write(std::string_view bytes) { write_all(fd_, bytes, path_); }

std::vector<std::filesystem::path> remove_stale_temporaries(const std::filesystem::path& dir) {
  // ".<name>.tmp-<pid>-XXXXXX" or ".<name>.old-<pid>-XXXXXX" (this version), ".<name>.tmp-<pid>"
  // and ".<name>.old-<pid>" (earlier versions).
  static const std::regex pattern(R"(\..+\.(tmp|old)-([0-9]{1,9})(-[A-Za-z0-9]{6})?)");
  std::vector<std::filesystem::path> removed;
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) return removed;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    std::smatch m;
    if (!std::regex_match(name, m, pattern) || !process_is_gone(std::stol(m[2]))) continue;
    // remove_all does not follow symlinks: a planted link is removed, never what it names.
    std::filesystem::remove_all(entry.path());
    removed.push_back(entry.path());
  }
  return removed;
}

bool is_plain_name(std::string_view name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string_view::npos &&
         name.find('\0') == std::string_view::npos;
}

void check_plain_name(std::string_view name, std::string_view what) {
  if (!is_plain_name(name)) {
    throw Error(fmt::format("{} '{}' must be a single plain name (not empty, no '/', not '.' or '..')", what, name));
  }
}

std::string read_file(const std::filesystem::path& path) {
  // std::ifstream opens a folder without complaint and then fails to read it, which used to
  // surface as an unexplained internal error.
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    throw Error(fmt::format("cannot read {}: it is a folder, not a file", path.string()));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw Error(fmt::format("cannot open {}: {}", path.string(),
                            std::filesystem::exists(path) ? "permission denied or not a file" : "no such file"));
  }
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw Error(fmt::format("error while reading {}", path.string()));
  return data;
}

namespace {

// Frees zlib's state on every path out of gunzip, exceptions included.
struct InflateStream {
  z_stream zs{};
  InflateStream() {
    if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) throw Error("zlib initialisation failed");
  }
  ~InflateStream() { inflateEnd(&zs); }
  InflateStream(const InflateStream&) = delete;
  InflateStream& operator=(const InflateStream&) = delete;
};

bool starts_gzip_member(std::string_view rest) {
  return rest.size() >= 2 && static_cast<unsigned char>(rest[0]) == 0x1f && static_cast<unsigned char>(rest[1]) == 0x8b;
}

}  // namespace

// A .gz file may hold several members one after the other (`cat a.gz b.gz`, pigz, bgzip);
// gzip(1) decompresses them all, so we do too. Anything after the last member that is not
// another member is refused: silently dropping it would hide a corrupt or mislabelled file.
std::string gunzip(std::string_view data, const std::string& what, std::size_t max_bytes) {
  if (data.empty()) throw Error(fmt::format("{} is empty, not gzip data", what));
  InflateStream stream;
  z_stream& zs = stream.zs;
  std::size_t consumed = 0;  // bytes of `data` handed to zlib so far
  // avail_in is 32 bits: larger inputs are fed in pieces.
  const auto feed = [&]() {
    const std::size_t piece = std::min<std::size_t>(data.size() - consumed, std::numeric_limits<uInt>::max());
    zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data() + consumed));
    zs.avail_in = static_cast<uInt>(piece);
    consumed += piece;
  };
  feed();
  std::string out;
  char buffer[1 << 16];
  int members = 1;
  for (;;) {
    zs.next_out = reinterpret_cast<Bytef*>(buffer);
    zs.avail_out = sizeof(buffer);
    const int rc = inflate(&zs, Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR) {
      throw Error(fmt::format("{} is not valid gzip data ({} in member {})", what, zs.msg ? zs.msg : "corrupt data",
                              members));
    }
    const std::size_t produced = sizeof(buffer) - zs.avail_out;
    if (produced > max_bytes - out.size()) {
      throw Error(fmt::format("{} decompresses to more than {} bytes, the limit for a gzip input (a gzip bomb or an "
                              "input too large to hold in memory; raise the limit if it is genuine)",
                              what, max_bytes));
    }
    out.append(buffer, produced);
    if (zs.avail_in == 0 && consumed < data.size()) feed();
    if (rc == Z_STREAM_END) {
      const std::size_t offset = consumed - zs.avail_in;  // where the finished member ends
      if (offset == data.size()) return out;
      const std::string_view rest = data.substr(offset);
      if (!starts_gzip_member(rest)) {
        throw Error(fmt::format("{}: {} bytes of trailing data at offset {} after gzip member {} are not another gzip "
                                "member (corrupt or not a .gz file)",
                                what, rest.size(), offset, members));
      }
      ++members;
      if (inflateReset(&zs) != Z_OK) throw Error("zlib reset failed");
      continue;
    }
    // No progress possible: the input ran out inside a member.
    if (produced == 0 && zs.avail_in == 0 && consumed == data.size()) {
      throw Error(fmt::format("{} is truncated gzip data (it ends inside member {})", what, members));
    }
  }
}

std::string read_text_file(const std::filesystem::path& path, std::size_t max_gunzip_bytes) {
  std::string data = read_file(path);
  if (path.extension() == ".gz") return gunzip(data, path.string(), max_gunzip_bytes);
  return data;
}

}  // namespace quartet

#include "quartet/util/files.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>

#include "quartet/error.h"

namespace quartet {

namespace {

std::string errno_text() { return std::strerror(errno); }

}  // namespace

void sync_directory(const std::filesystem::path& dir) {
  const int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) throw Error(fmt::format("cannot open folder {}: {}", dir.string(), errno_text()));
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) throw Error(fmt::format("cannot sync folder {}: {}", dir.string(), errno_text()));
}

void write_file_atomic(const std::filesystem::path& path, std::string_view bytes) {
  const std::filesystem::path dir = path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
  const std::filesystem::path tmp = dir / fmt::format(".{}.tmp-{}", path.filename().string(), ::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) throw Error(fmt::format("cannot create {}: {}", tmp.string(), errno_text()));
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      const std::string why = errno_text();
      ::close(fd);
      ::unlink(tmp.c_str());
      throw Error(fmt::format("cannot write {}: {}", path.string(), why));
    }
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
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

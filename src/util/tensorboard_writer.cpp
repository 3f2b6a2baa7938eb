// EventsFileWriter (tensorboard_events.h).
#include <fmt/format.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>

#include "quartet/error.h"
#include "quartet/util/files.h"
#include "quartet/util/tensorboard_events.h"
#include "quartet/util/tfrecord.h"

namespace quartet {

namespace {

// The host name as TensorBoard's writers put it in file names, reduced to characters that
// are safe in one: anything else becomes '_'.
std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0 || buf[0] == '\0') return "localhost";
  std::string name(buf);
  for (char& c : name) {
    const bool safe = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.';
    if (!safe) c = '_';
  }
  return name;
}

// The seconds in an events file's name ("events.out.tfevents.<seconds>.<...>"), or -1.
long long seconds_in_name(const std::string& name) {
  if (name.rfind(kEventsFilePrefix, 0) != 0) return -1;
  const std::string rest = name.substr(kEventsFilePrefix.size());
  const std::size_t dot = rest.find('.');
  const std::string digits = rest.substr(0, dot);
  if (digits.empty() || digits.size() > 12 || digits.find_first_not_of("0123456789") != std::string::npos) return -1;
  return std::stoll(digits);
}

}  // namespace

EventsFileWriter::EventsFileWriter(const std::filesystem::path& folder, double wall_time) {
  std::error_code ec;
  std::filesystem::create_directories(folder, ec);
  if (ec || !std::filesystem::is_directory(folder)) {
    throw Error(fmt::format("cannot create the TensorBoard folder {}: {}", folder.string(),
                            ec ? ec.message() : "it exists and is not a folder"));
  }
  // A resumed run started within the same second as the run before it (or on a machine whose
  // clock is behind) must still sort after it.
  long long seconds = static_cast<long long>(std::floor(wall_time));
  for (const auto& entry : std::filesystem::directory_iterator(folder)) {
    const long long taken = seconds_in_name(entry.path().filename().string());
    if (taken >= seconds) seconds = taken + 1;
  }
  path_ = folder / fmt::format("{}{}.{}.{}", kEventsFilePrefix, seconds, host_name(), ::getpid());
  if (std::filesystem::exists(std::filesystem::symlink_status(path_))) {
    throw Error(fmt::format("{} exists already; not appending to another run's events", path_.string()));
  }
  file_ = std::make_unique<AppendFile>(path_);
  TensorBoardEvent version;
  version.wall_time = wall_time;
  version.file_version = std::string(kEventsFileVersion);
  write(version);
}

EventsFileWriter::~EventsFileWriter() = default;

void EventsFileWriter::write(const TensorBoardEvent& event) { file_->write(tfrecord_frame(encode_event(event))); }

}  // namespace quartet

// read_events_file (tensorboard_events.h).
#include <fmt/format.h>

#include "quartet/error.h"
#include "quartet/util/files.h"
#include "quartet/util/tensorboard_events.h"
#include "quartet/util/tfrecord.h"

namespace quartet {

std::vector<TensorBoardEvent> read_events_file(const std::filesystem::path& path) {
  const std::string name = path.string();
  const std::vector<std::string> records = read_tfrecords(read_file(path), name);
  if (records.empty()) {
    throw Error(fmt::format("{}: empty; an events file starts with a file-version record", name));
  }
  std::vector<TensorBoardEvent> events;
  events.reserve(records.size());
  for (std::size_t i = 0; i < records.size(); ++i) {
    events.push_back(decode_event(records[i], fmt::format("{}: record {}", name, i + 1)));
  }
  if (events.front().file_version.rfind("brain.Event:", 0) != 0) {
    throw Error(fmt::format("{}: the first record is not the file-version event (file_version \"{}\"); found "
                            "file_version \"{}\"",
                            name, kEventsFileVersion, events.front().file_version));
  }
  return events;
}

}  // namespace quartet

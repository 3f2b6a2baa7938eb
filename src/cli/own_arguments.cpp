#include "cli/own_arguments.h"

#include "quartet/util/files.h"

namespace quartet::cli {

std::vector<std::string> own_arguments() {
  const std::string cmdline = read_file("/proc/self/cmdline");
  std::vector<std::string> args;
  std::string current;
  for (char ch : cmdline) {
    if (ch == '\0') {
      args.push_back(current);
      current.clear();
    } else {
      current += ch;
    }
  }
  if (!current.empty()) args.push_back(current);
  if (!args.empty()) args.erase(args.begin());
  return args;
}

}  // namespace quartet::cli

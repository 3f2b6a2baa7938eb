// Error-message formatting for .cu files: nvcc's host pass cannot compile {fmt}'s headers in
// C++20 mode, so these files build messages with a stream instead.
#pragma once

#include <sstream>
#include <string>

namespace quartet::cuda {

template <class... Parts>
std::string message(const Parts&... parts) {
  std::ostringstream out;
  (out << ... << parts);
  return out.str();
}

}  // namespace quartet::cuda

// libFuzzer target: gunzip on arbitrary bytes, under a small cap (the cap itself is under
// test: output past it must be an Error, never an allocation).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "quartet/error.h"
#include "quartet/util/files.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  constexpr std::size_t kCap = 1 << 20;
  try {
    const std::string out = quartet::gunzip(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz", kCap);
    if (out.size() > kCap) std::abort();
  } catch (const quartet::Error&) {
  }
  return 0;
}

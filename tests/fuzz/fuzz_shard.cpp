// libFuzzer target: the llm.c token shard reader on arbitrary bytes; a shard that parses must
// hold exactly the tokens its size allows.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "quartet/data/shards.h"
#include "quartet/error.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const auto tokens = quartet::parse_shard(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz");
    if (quartet::kShardHeaderBytes + 2 * tokens.size() != size) std::abort();
  } catch (const quartet::Error&) {
  }
  return 0;
}

// libFuzzer target: the safetensors reader on arbitrary bytes. Any outcome but a parsed file or
// a quartet::Error (a crash, a sanitizer report, another exception) is a finding.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "quartet/error.h"
#include "quartet/util/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const quartet::SafeTensors file =
        quartet::parse_safetensors(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz");
    for (const auto& [name, t] : file.tensors) {
      if (t.dtype == "F32" || t.dtype == "F64") (void)quartet::tensor_values(t);
    }
  } catch (const quartet::Error&) {
  }
  return 0;
}

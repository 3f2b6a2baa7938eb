// safetensors (the Hugging Face weight format): an 8-byte little-endian header length, a
// JSON header {"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {}}
// padded with spaces to 8 bytes, then the tensor bytes, contiguous and without holes.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace quartet {

struct SafeTensor {
  std::string dtype;  // "F32", "F64", "BF16", "I32", "U8", ...
  std::vector<std::int64_t> shape;
  std::string bytes;
};

struct SafeTensors {
  std::map<std::string, SafeTensor> tensors;
  std::map<std::string, std::string> metadata;

  // The named tensor, checked for dtype and shape; throws Error naming the file and tensor.
  const SafeTensor& get(const std::string& name, const std::string& dtype, const std::vector<std::int64_t>& shape) const;
  std::string origin;  // file name for messages
};

std::size_t safetensors_dtype_size(const std::string& dtype);  // throws Error for unknown dtypes

// Writes atomically (write_file_atomic); tensors in name order.
void write_safetensors(const std::filesystem::path& path, const SafeTensors& file);

// The largest JSON header accepted (the Hugging Face reader's own limit is 100 MB too): the
// header is parsed into a DOM several times its size, so an unbounded one could exhaust memory.
inline constexpr std::uint64_t kMaxSafetensorsHeaderBytes = 100u << 20;

// Validates everything (header length, JSON, dtypes, shapes against byte ranges, ranges
// inside the file, contiguity) and throws Error naming the file and the problem. Every number
// in the header is untrusted: negative, fractional and out-of-range values, and shapes whose
// byte count overflows, are refused rather than converted.
SafeTensors read_safetensors(const std::filesystem::path& path);

// The same on bytes already in memory; `origin` names them in messages.
SafeTensors parse_safetensors(std::string_view data, const std::string& origin);

// Float tensors <-> doubles (F32 and F64; values round-trip exactly for F32 data).
SafeTensor make_f32_tensor(const std::vector<std::int64_t>& shape, const std::vector<double>& values);
std::vector<double> tensor_values(const SafeTensor& t);

}  // namespace quartet

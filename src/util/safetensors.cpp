#include "quartet/util/safetensors.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>

#include "quartet/error.h"
#include "quartet/util/checked.h"
#include "quartet/util/files.h"

namespace quartet {

std::size_t safetensors_dtype_size(const std::string& dtype) {
  static const std::map<std::string, std::size_t> sizes = {{"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2},
                                                           {"I64", 8}, {"I32", 4}, {"I16", 2}, {"I8", 1},
                                                           {"U8", 1},  {"BOOL", 1}};
  const auto it = sizes.find(dtype);
  if (it == sizes.end()) throw Error(fmt::format("unknown safetensors dtype '{}'", dtype));
  return it->second;
}

namespace {

// Elements of a shape, refusing negative dimensions and products that overflow (a crafted
// header can hold any numbers; a wrapped product would make a tiny byte range look right).
std::int64_t numel(const std::vector<std::int64_t>& shape, std::string_view what) {
  std::int64_t n = 1;
  for (std::int64_t d : shape) {
    if (d < 0) throw Error(fmt::format("{} has a negative dimension {}", what, d));
    n = checked_mul(n, d, what);
  }
  return n;
}

// Bytes of a tensor's data: numel x dtype size, checked.
std::int64_t tensor_bytes(const std::vector<std::int64_t>& shape, const std::string& dtype, std::string_view what) {
  return checked_mul(numel(shape, what), static_cast<std::int64_t>(safetensors_dtype_size(dtype)), what);
}

// A non-negative integer from the header. nlohmann would convert -1 to 2^64-1 for an unsigned
// target and 1.5 to 1 (or 1e30 to anything: undefined); every such value is refused instead.
std::int64_t header_count(const nlohmann::json& v, std::string_view what) {
  if (v.is_number_unsigned()) {
    const auto u = v.get<std::uint64_t>();
    if (u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
      throw Error(fmt::format("{} is {}, too large", what, u));
    }
    return static_cast<std::int64_t>(u);
  }
  if (v.is_number_integer()) throw Error(fmt::format("{} must not be negative, found {}", what, v.get<std::int64_t>()));
  if (v.is_number_float()) return checked_integer(v.get<double>(), 0, std::numeric_limits<std::int64_t>::max(), what);
  throw Error(fmt::format("{} must be a number, found {}", what, v.dump()));
}

std::vector<std::int64_t> header_counts(const nlohmann::json& v, std::string_view what) {
  if (!v.is_array()) throw Error(fmt::format("{} must be an array, found {}", what, v.type_name()));
  std::vector<std::int64_t> out;
  for (std::size_t i = 0; i < v.size(); ++i) out.push_back(header_count(v[i], fmt::format("{} [{}]", what, i)));
  return out;
}

std::string shape_text(const std::vector<std::int64_t>& shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

}  // namespace

const SafeTensor& SafeTensors::get(const std::string& name, const std::string& dtype,
                                   const std::vector<std::int64_t>& shape) const {
  const auto it = tensors.find(name);
  if (it == tensors.end()) throw Error(fmt::format("{}: tensor '{}' is missing", origin, name));
  if (it->second.dtype != dtype || it->second.shape != shape) {
    throw Error(fmt::format("{}: tensor '{}' is {} {}, expected {} {}", origin, name, it->second.dtype,
                            shape_text(it->second.shape), dtype, shape_text(shape)));
  }
  return it->second;
}

void write_safetensors(const std::filesystem::path& path, const SafeTensors& file) {
  nlohmann::json header = nlohmann::json::object();
  std::size_t offset = 0;
  for (const auto& [name, t] : file.tensors) {
    const auto bytes = static_cast<std::size_t>(tensor_bytes(t.shape, t.dtype, fmt::format("tensor '{}'", name)));
    if (bytes != t.bytes.size()) {
      throw Error(fmt::format("{}: tensor '{}' has {} bytes for shape {} {}", path.string(), name, t.bytes.size(),
                              shape_text(t.shape), t.dtype));
    }
    header[name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  if (!file.metadata.empty()) header["__metadata__"] = file.metadata;
  std::string json = header.dump();
  json.append((8 - json.size() % 8) % 8, ' ');
  std::string out(8, '\0');
  const std::uint64_t n = json.size();
  std::memcpy(out.data(), &n, 8);
  out += json;
  out.reserve(out.size() + offset);
  for (const auto& [name, t] : file.tensors) out += t.bytes;
  write_file_atomic(path, out);
}

SafeTensors read_safetensors(const std::filesystem::path& path) { return parse_safetensors(read_file(path), path.string()); }

SafeTensors parse_safetensors(std::string_view data, const std::string& where) {
  SafeTensors file;
  file.origin = where;
  if (data.size() < 8) throw Error(fmt::format("{}: {} bytes is too short for a safetensors file", where, data.size()));
  std::uint64_t n = 0;
  std::memcpy(&n, data.data(), 8);
  if (n > data.size() - 8 || n > kMaxSafetensorsHeaderBytes) {
    throw Error(fmt::format("{}: header length {} does not fit in the {}-byte file or exceeds the {}-byte limit "
                            "(truncated or not safetensors)",
                            where, n, data.size(), kMaxSafetensorsHeaderBytes));
  }
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(data.substr(8, n));
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("{}: the header is not valid JSON ({})", where, e.what()));
  }
  if (!header.is_object()) throw Error(fmt::format("{}: the header is not a JSON object", where));
  const std::size_t base = 8 + n;
  const auto data_bytes = static_cast<std::int64_t>(data.size() - base);
  std::vector<std::pair<std::int64_t, std::int64_t>> ranges;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      try {
        file.metadata = entry.get<std::map<std::string, std::string>>();
      } catch (const nlohmann::json::exception&) {
        throw Error(fmt::format("{}: __metadata__ must map strings to strings", where));
      }
      continue;
    }
    SafeTensor t;
    std::int64_t begin = 0, end = 0, want = 0;
    try {
      if (!entry.is_object()) throw Error(fmt::format("an object expected, found {}", entry.type_name()));
      t.dtype = entry.at("dtype").get<std::string>();
      t.shape = header_counts(entry.at("shape"), "shape");
      const std::vector<std::int64_t> offsets = header_counts(entry.at("data_offsets"), "data_offsets");
      if (offsets.size() != 2) throw Error(fmt::format("data_offsets needs two numbers, found {}", offsets.size()));
      begin = offsets[0];
      end = offsets[1];
      want = tensor_bytes(t.shape, t.dtype, "its size");
    } catch (const std::exception& e) {
      throw Error(fmt::format("{}: tensor '{}' has a malformed entry ({})", where, name, e.what()));
    }
    if (end < begin || end > data_bytes || end - begin != want) {
      throw Error(fmt::format("{}: tensor '{}' ({} {}, {} bytes) claims bytes [{}, {}) of a {}-byte data section{}",
                              where, name, t.dtype, shape_text(t.shape), want, begin, end, data_bytes,
                              end > data_bytes ? " (truncated file)" : ""));
    }
    t.bytes = std::string(data.substr(base + static_cast<std::size_t>(begin), static_cast<std::size_t>(end - begin)));
    ranges.emplace_back(begin, end);
    file.tensors.emplace(name, std::move(t));
  }
  std::sort(ranges.begin(), ranges.end());
  std::int64_t expected = 0;
  for (const auto& [b, e] : ranges) {
    if (b != expected) throw Error(fmt::format("{}: tensor data overlaps or leaves a hole at byte {}", where, expected));
    expected = e;
  }
  if (expected != data_bytes) {
    throw Error(fmt::format("{}: {} bytes after the last tensor (corrupt file)", where, data_bytes - expected));
  }
  return file;
}

SafeTensor make_f32_tensor(const std::vector<std::int64_t>& shape, const std::vector<double>& values) {
  SafeTensor t;
  t.dtype = "F32";
  t.shape = shape;
  t.bytes.resize(values.size() * 4);
  for (std::size_t i = 0; i < values.size(); ++i) {
    const auto f = static_cast<float>(values[i]);
    std::memcpy(t.bytes.data() + 4 * i, &f, 4);
  }
  return t;
}

std::vector<double> tensor_values(const SafeTensor& t) {
  const auto bytes = static_cast<std::size_t>(tensor_bytes(t.shape, t.dtype, "tensor"));
  if (bytes != t.bytes.size()) {
    throw Error(fmt::format("a {} {} tensor needs {} bytes, found {}", t.dtype, shape_text(t.shape), bytes, t.bytes.size()));
  }
  const std::size_t n = bytes / safetensors_dtype_size(t.dtype);
  std::vector<double> out(n);
  if (t.dtype == "F32") {
    for (std::size_t i = 0; i < n; ++i) {
      float f;
      std::memcpy(&f, t.bytes.data() + 4 * i, 4);
      out[i] = f;
    }
  } else if (t.dtype == "F64") {
    if (n > 0) std::memcpy(out.data(), t.bytes.data(), 8 * n);
  } else {
    throw Error(fmt::format("cannot read {} values as floating point", t.dtype));
  }
  return out;
}

}  // namespace quartet

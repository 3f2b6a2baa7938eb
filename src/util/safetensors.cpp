#include "quartet/util/safetensors.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>

#include "quartet/error.h"
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

std::int64_t numel(const std::vector<std::int64_t>& shape) {
  std::int64_t n = 1;
  for (std::int64_t d : shape) n *= d;
  return n;
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
    const std::size_t bytes = static_cast<std::size_t>(numel(t.shape)) * safetensors_dtype_size(t.dtype);
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

SafeTensors read_safetensors(const std::filesystem::path& path) {
  const std::string data = read_file(path);
  const std::string where = path.string();
  SafeTensors file;
  file.origin = where;
  if (data.size() < 8) throw Error(fmt::format("{}: {} bytes is too short for a safetensors file", where, data.size()));
  std::uint64_t n = 0;
  std::memcpy(&n, data.data(), 8);
  if (n > data.size() - 8 || n > (100u << 20)) {
    throw Error(fmt::format("{}: header length {} does not fit in the {}-byte file (truncated or not safetensors)", where,
                            n, data.size()));
  }
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(data.substr(8, n));
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("{}: the header is not valid JSON ({})", where, e.what()));
  }
  if (!header.is_object()) throw Error(fmt::format("{}: the header is not a JSON object", where));
  const std::size_t base = 8 + n, data_bytes = data.size() - base;
  std::vector<std::pair<std::size_t, std::size_t>> ranges;
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
    std::size_t begin = 0, end = 0;
    try {
      t.dtype = entry.at("dtype").get<std::string>();
      t.shape = entry.at("shape").get<std::vector<std::int64_t>>();
      const auto offsets = entry.at("data_offsets").get<std::vector<std::size_t>>();
      if (offsets.size() != 2) throw Error("data_offsets needs two numbers");
      begin = offsets[0];
      end = offsets[1];
    } catch (const std::exception& e) {
      throw Error(fmt::format("{}: tensor '{}' has a malformed entry ({})", where, name, e.what()));
    }
    for (std::int64_t d : t.shape) {
      if (d < 0) throw Error(fmt::format("{}: tensor '{}' has a negative dimension", where, name));
    }
    const std::size_t want = static_cast<std::size_t>(numel(t.shape)) * safetensors_dtype_size(t.dtype);
    if (end < begin || end > data_bytes || end - begin != want) {
      throw Error(fmt::format("{}: tensor '{}' ({} {}) claims bytes [{}, {}) of a {}-byte data section{}", where, name,
                              t.dtype, shape_text(t.shape), begin, end, data_bytes,
                              end > data_bytes ? " (truncated file)" : ""));
    }
    t.bytes = data.substr(base + begin, end - begin);
    ranges.emplace_back(begin, end);
    file.tensors.emplace(name, std::move(t));
  }
  std::sort(ranges.begin(), ranges.end());
  std::size_t expected = 0;
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
  const std::size_t n = static_cast<std::size_t>(numel(t.shape));
  std::vector<double> out(n);
  if (t.dtype == "F32") {
    for (std::size_t i = 0; i < n; ++i) {
      float f;
      std::memcpy(&f, t.bytes.data() + 4 * i, 4);
      out[i] = f;
    }
  } else if (t.dtype == "F64") {
    std::memcpy(out.data(), t.bytes.data(), 8 * n);
  } else {
    throw Error(fmt::format("cannot read {} values as floating point", t.dtype));
  }
  return out;
}

}  // namespace quartet

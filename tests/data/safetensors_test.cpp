// The safetensors reader on crafted headers: every number in the header is untrusted.
#include "quartet/util/safetensors.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "quartet/error.h"
#include "quartet/util/files.h"
#include "support/temp_dir.h"

namespace quartet {
namespace {

// A file with `json` as its header (padded as the format requires) and `data_bytes` of data.
std::string with_header(std::string json, std::size_t data_bytes) {
  json.append((8 - json.size() % 8) % 8, ' ');
  std::string out(8, '\0');
  const std::uint64_t n = json.size();
  std::memcpy(out.data(), &n, 8);
  return out + json + std::string(data_bytes, '\x11');
}

std::string error_of(const std::string& bytes) {
  try {
    parse_safetensors(bytes, "crafted.safetensors");
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an Error";
  return "";
}

void expect_refused(const std::string& json, std::size_t data_bytes, const std::string& fragment) {
  const std::string message = error_of(with_header(json, data_bytes));
  EXPECT_NE(message.find("crafted.safetensors"), std::string::npos) << message;
  EXPECT_NE(message.find(fragment), std::string::npos) << json << "\n -> " << message;
}

TEST(Safetensors, AWellFormedHeaderParses) {
  const SafeTensors f = parse_safetensors(
      with_header(R"({"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"b":{"dtype":"U8","shape":[],)"
                  R"("data_offsets":[24,25]},"e":{"dtype":"F32","shape":[0,5],"data_offsets":[25,25]},)"
                  R"("__metadata__":{"k":"v"}})",
                  25),
      "ok");
  ASSERT_EQ(f.tensors.size(), 3u);
  EXPECT_EQ(f.tensors.at("a").shape, (std::vector<std::int64_t>{2, 3}));
  EXPECT_EQ(f.tensors.at("a").bytes.size(), 24u);
  EXPECT_EQ(f.tensors.at("b").bytes, "\x11");
  EXPECT_TRUE(f.tensors.at("e").bytes.empty());
  EXPECT_EQ(f.metadata.at("k"), "v");
}

// Regression: the element count was a plain int64 product (signed overflow: undefined), so a
// shape whose product wraps to a small number could match a small byte range.
TEST(Safetensors, RefusesShapesWhoseByteCountOverflows) {
  // 2^32 x 2^32 wraps to 0 in 64 bits; with data_offsets [0, 0] it used to be accepted.
  expect_refused(R"({"t":{"dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,0]}})", 0, "overflows");
  // 2^62 elements of 4 bytes overflow only in the byte count.
  expect_refused(R"({"t":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0]}})", 0, "overflows");
}

// Regression: offsets were read as size_t, so -1 became 2^64-1 and 1.5 became 1.
TEST(Safetensors, RefusesNegativeFractionalAndHugeNumbers) {
  expect_refused(R"({"t":{"dtype":"U8","shape":[4],"data_offsets":[-1,3]}})", 4, "must not be negative, found -1");
  expect_refused(R"({"t":{"dtype":"U8","shape":[-4],"data_offsets":[0,4]}})", 4, "must not be negative, found -4");
  expect_refused(R"({"t":{"dtype":"U8","shape":[4],"data_offsets":[0.5,4]}})", 4, "must be an integer");
  expect_refused(R"({"t":{"dtype":"U8","shape":[1.5],"data_offsets":[0,1]}})", 1, "must be an integer");
  expect_refused(R"({"t":{"dtype":"U8","shape":[1e300],"data_offsets":[0,1]}})", 1, "must be an integer");
  expect_refused(R"({"t":{"dtype":"U8","shape":[4],"data_offsets":[0,18446744073709551615]}})", 4, "too large");
  expect_refused(R"({"t":{"dtype":"U8","shape":[4],"data_offsets":[9223372036854775800,9223372036854775804]}})", 4,
                 "claims bytes [9223372036854775800, 9223372036854775804)");
  expect_refused(R"({"t":{"dtype":"U8","shape":"4","data_offsets":[0,4]}})", 4, "shape must be an array");
  expect_refused(R"({"t":{"dtype":"U8","shape":[true],"data_offsets":[0,1]}})", 1, "must be a number");
  expect_refused(R"({"t":{"dtype":"U8","shape":[4],"data_offsets":[0,2,4]}})", 4, "needs two numbers");
  expect_refused(R"({"t":{"dtype":"Q4","shape":[4],"data_offsets":[0,4]}})", 4, "unknown safetensors dtype 'Q4'");
  expect_refused(R"({"t":[1,2]})", 0, "tensor 't' has a malformed entry");
}

TEST(Safetensors, RefusesBadHeaderLengthsHolesAndOverlaps) {
  std::string huge_length(16, '\0');
  const std::uint64_t n = ~std::uint64_t{0};
  std::memcpy(huge_length.data(), &n, 8);
  EXPECT_NE(error_of(huge_length).find("header length 18446744073709551615"), std::string::npos);
  EXPECT_NE(error_of("short").find("too short"), std::string::npos);
  expect_refused(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],)"
                 R"("data_offsets":[1,3]}})",
                 3, "overlaps or leaves a hole");
  expect_refused(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})", 5, "3 bytes after the last tensor");
  expect_refused(R"({"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]}})", 5, "truncated file");
  expect_refused("[1]", 0, "not a JSON object");
  expect_refused("{", 0, "not valid JSON");
}

TEST(Safetensors, WriteThenReadRoundTrips) {
  testing::TempDir dir;
  SafeTensors f;
  f.tensors["w"] = make_f32_tensor({2, 2}, {1.0, -2.0, 0.5, 3.0});
  f.metadata["format"] = "pt";
  write_safetensors(dir.path() / "m.safetensors", f);
  const SafeTensors back = read_safetensors(dir.path() / "m.safetensors");
  EXPECT_EQ(tensor_values(back.get("w", "F32", {2, 2})), (std::vector<double>{1.0, -2.0, 0.5, 3.0}));
  EXPECT_EQ(back.metadata.at("format"), "pt");
  // A tensor whose bytes do not match its shape is refused, not read past its end.
  SafeTensor bad = make_f32_tensor({3}, {1.0, 2.0});
  EXPECT_THROW(tensor_values(bad), Error);
}

}  // namespace
}  // namespace quartet

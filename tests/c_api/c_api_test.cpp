// The C interface against the C++ layer it wraps: the same inputs, weights and random
// numbers through quartet_linear_* and through linear_forward / linear_backward on the CPU
// backend give the same bits; and every kind of bad argument is refused with a message that
// names it.
#include "quartet/c_api.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "quartet/backend/backend.h"
#include "quartet/nn/linear.h"
#include "quartet/nn/recipe.h"
#include "quartet/numerics/bf16.h"
#include "support/test_support.h"

namespace quartet {
namespace {

// The recipes as the CLI spells them (docs/recipes.md), written out rather than read back.
const std::vector<std::string> kRecipes = {"bf16", "nvidia", "nvidia+4/6", "tetrajet2", "quartet2", "quartet1", "quartet1-sr"};

constexpr std::int64_t kTokens = 128, kIn = 128, kOut = 256;
constexpr std::uint64_t kSeed = 1234;
constexpr std::uint32_t kLayer = 3, kCall = 7;

// Activations in either dtype, as the bytes the C interface reads.
struct Activations {
  quartet_dtype dtype;
  std::vector<std::uint8_t> bytes;
  const void* data() const { return bytes.data(); }
  void* data() { return bytes.data(); }
};

Activations make_activations(const std::vector<float>& values, quartet_dtype dtype) {
  Activations a{dtype, {}};
  if (dtype == QUARTET_DTYPE_BFLOAT16) {
    std::vector<std::uint16_t> h(values.size());
    for (std::size_t i = 0; i < values.size(); ++i) h[i] = bf16_bits(values[i]);
    a.bytes.resize(h.size() * 2);
    std::memcpy(a.bytes.data(), h.data(), a.bytes.size());
  } else {
    a.bytes.resize(values.size() * 4);
    std::memcpy(a.bytes.data(), values.data(), a.bytes.size());
  }
  return a;
}

Activations empty_like(std::int64_t count, quartet_dtype dtype) {
  return Activations{dtype, std::vector<std::uint8_t>(static_cast<std::size_t>(count) * (dtype == QUARTET_DTYPE_BFLOAT16 ? 2 : 4), 0xAB)};
}

DType dtype_of(quartet_dtype d) { return d == QUARTET_DTYPE_BFLOAT16 ? DType::bf16 : DType::f32; }

Tensor host_tensor(Backend& b, const void* bytes, Shape shape, DType dtype) {
  Tensor t = b.empty(shape, dtype);
  std::memcpy(t.raw(), bytes, t.bytes());
  return t;
}

std::vector<std::uint8_t> bytes_of(const Tensor& t) {
  const auto* p = static_cast<const std::uint8_t*>(t.raw());
  return std::vector<std::uint8_t>(p, p + t.bytes());
}

struct Handles {
  quartet_context* context = nullptr;
  quartet_linear* linear = nullptr;
  ~Handles() {
    quartet_linear_destroy(linear);
    quartet_context_destroy(context);
  }
};

// Creates a CPU context and a layer, failing the test with the library's message if it cannot.
void make_layer(Handles& h, const std::string& recipe, std::vector<std::pair<std::string, std::string>> options = {},
                std::int64_t in = kIn, std::int64_t out = kOut, std::uint32_t layer = kLayer) {
  ASSERT_EQ(quartet_context_create(QUARTET_DEVICE_CPU, 0, &h.context), QUARTET_OK) << quartet_last_error();
  std::vector<const char*> names, values;
  for (const auto& [n, v] : options) {
    names.push_back(n.c_str());
    values.push_back(v.c_str());
  }
  ASSERT_EQ(quartet_linear_create(h.context, recipe.c_str(), names.data(), values.data(), static_cast<int32_t>(names.size()),
                                  in, out, kSeed, layer, &h.linear),
            QUARTET_OK)
      << quartet_last_error();
}

struct Problem {
  std::vector<float> x, w, dy;
  Problem() : x(testing::gaussian_matrix(kTokens, kIn, 11)), w(testing::gaussian_matrix(kOut, kIn, 12, 0.05)),
              dy(testing::gaussian_matrix(kTokens, kOut, 13, 0.01)) {}
};

struct Outputs {
  std::vector<std::uint8_t> y, dx, dw;
};

Outputs run_c_api(quartet_linear* linear, const Problem& p, quartet_dtype dtype, bool recompute) {
  const Activations x = make_activations(p.x, dtype), dy = make_activations(p.dy, dtype);
  Activations y = empty_like(kTokens * kOut, dtype), dx = empty_like(kTokens * kIn, dtype);
  std::vector<float> dw(static_cast<std::size_t>(kOut * kIn), std::numeric_limits<float>::quiet_NaN());
  quartet_linear_saved* saved = nullptr;
  EXPECT_EQ(quartet_linear_forward(linear, x.data(), dtype, kTokens, p.w.data(), y.data(), kCall, nullptr,
                                   recompute ? nullptr : &saved),
            QUARTET_OK)
      << quartet_last_error();
  EXPECT_EQ(quartet_linear_backward(linear, saved, x.data(), p.w.data(), dy.data(), dtype, kTokens, dx.data(), dw.data(),
                                    /*accumulate_dw=*/0, kCall, nullptr),
            QUARTET_OK)
      << quartet_last_error();
  quartet_linear_saved_destroy(saved);
  Outputs o{y.bytes, dx.bytes, std::vector<std::uint8_t>(dw.size() * 4)};
  std::memcpy(o.dw.data(), dw.data(), o.dw.size());
  return o;
}

Outputs run_cpp(const std::string& recipe_name, const Problem& p, quartet_dtype dtype) {
  auto backend = make_cpu_backend();
  const Recipe recipe = make_recipe(recipe_name);
  const DType dt = dtype_of(dtype);
  const Activations xa = make_activations(p.x, dtype), dya = make_activations(p.dy, dtype);
  const Tensor x = host_tensor(*backend, xa.data(), {kTokens, kIn}, dt);
  const Tensor w = host_tensor(*backend, p.w.data(), {kOut, kIn}, DType::f32);
  const Tensor dy = host_tensor(*backend, dya.data(), {kTokens, kOut}, dt);
  Tensor y = backend->empty({kTokens, kOut}, dt), dx = backend->empty({kTokens, kIn}, dt);
  Tensor dw = backend->zeros({kOut, kIn}, DType::f32);
  LinearSaved saved;
  const LinearRandom random{kSeed, kLayer, kCall};
  linear_forward(*backend, recipe, x, w, y, saved, random);
  linear_backward(*backend, recipe, dy, w, saved, dx, dw, random);
  return Outputs{bytes_of(y), bytes_of(dx), bytes_of(dw)};
}

class CApiMatchesLinear : public ::testing::TestWithParam<std::tuple<std::string, quartet_dtype>> {};

TEST_P(CApiMatchesLinear, ForwardAndBackwardBitwise) {
  const auto& [recipe, dtype] = GetParam();
  const Problem p;
  Handles h;
  make_layer(h, recipe);
  const Outputs expected = run_cpp(recipe, p, dtype);
  const Outputs saved = run_c_api(h.linear, p, dtype, /*recompute=*/false);
  EXPECT_EQ(saved.y, expected.y) << "Y";
  EXPECT_EQ(saved.dx, expected.dx) << "dX";
  EXPECT_EQ(saved.dw, expected.dw) << "dW";
  // Without a saved object the backward recomputes it: the same bits.
  const Outputs recomputed = run_c_api(h.linear, p, dtype, /*recompute=*/true);
  EXPECT_EQ(recomputed.dx, expected.dx) << "dX, recomputed";
  EXPECT_EQ(recomputed.dw, expected.dw) << "dW, recomputed";
}

INSTANTIATE_TEST_SUITE_P(Recipes, CApiMatchesLinear,
                         ::testing::Combine(::testing::ValuesIn(kRecipes),
                                            ::testing::Values(QUARTET_DTYPE_BFLOAT16, QUARTET_DTYPE_FLOAT32)),
                         [](const auto& test) {
                           std::string name = std::get<0>(test.param);
                           for (char& c : name) {
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           }
                           return name + (std::get<1>(test.param) == QUARTET_DTYPE_BFLOAT16 ? "_bf16" : "_f32");
                         });

TEST(CApi, LibraryDescribesItself) {
  EXPECT_EQ(quartet_c_api_version(), QUARTET_C_API_VERSION);
  EXPECT_STREQ(quartet_version(), "0.1.0");
  ASSERT_EQ(quartet_recipe_count(), static_cast<int32_t>(kRecipes.size()));
  for (std::size_t i = 0; i < kRecipes.size(); ++i) EXPECT_EQ(quartet_recipe_name(static_cast<int32_t>(i)), kRecipes[i]);
  EXPECT_EQ(quartet_recipe_name(-1), nullptr);
  EXPECT_EQ(quartet_recipe_name(static_cast<int32_t>(kRecipes.size())), nullptr);
}

TEST(CApi, OptionsReachTheRecipe) {
  Handles h;
  make_layer(h, "quartet2", {{"backward_rotation", "32"}, {"four_over_six", "false"}});
  const std::string d = quartet_linear_describe(h.linear);
  EXPECT_NE(d.find("quartet2 (modified)"), std::string::npos) << d;
  EXPECT_NE(d.find("RHT-32"), std::string::npos) << d;
  EXPECT_EQ(d.find("RHT-128"), std::string::npos) << d;
  EXPECT_EQ(quartet_linear_token_multiple(h.linear), 32);
}

TEST(CApi, TokenMultipleIsTheWgradRotation) {
  Handles a, b, c;
  make_layer(a, "quartet2");
  make_layer(b, "nvidia");
  make_layer(c, "bf16");
  EXPECT_EQ(quartet_linear_token_multiple(a.linear), 128);
  EXPECT_EQ(quartet_linear_token_multiple(b.linear), 16);
  EXPECT_EQ(quartet_linear_token_multiple(c.linear), 1);
}

// dW of one backward with accumulate_dw, minus its value before, is the dW of one without.
TEST(CApi, AccumulatedWeightGradientAddsToTheBuffer) {
  const Problem p;
  Handles h;
  make_layer(h, "quartet2");
  const Outputs fresh = run_c_api(h.linear, p, QUARTET_DTYPE_BFLOAT16, false);
  std::vector<float> contribution(static_cast<std::size_t>(kOut * kIn));
  std::memcpy(contribution.data(), fresh.dw.data(), fresh.dw.size());

  const Activations x = make_activations(p.x, QUARTET_DTYPE_BFLOAT16), dy = make_activations(p.dy, QUARTET_DTYPE_BFLOAT16);
  Activations dx = empty_like(kTokens * kIn, QUARTET_DTYPE_BFLOAT16);
  std::vector<float> dw(contribution.size());
  for (std::size_t i = 0; i < dw.size(); ++i) dw[i] = 0.25f * static_cast<float>(i % 7);
  const std::vector<float> before = dw;
  ASSERT_EQ(quartet_linear_backward(h.linear, nullptr, x.data(), p.w.data(), dy.data(), QUARTET_DTYPE_BFLOAT16, kTokens,
                                    dx.data(), dw.data(), 1, kCall, nullptr),
            QUARTET_OK)
      << quartet_last_error();
  for (std::size_t i = 0; i < dw.size(); ++i) ASSERT_EQ(dw[i], before[i] + contribution[i]) << "element " << i;
}

// Fresh random bits per call and per layer; the same bits for the same (seed, layer, call).
TEST(CApi, CallAndLayerSelectTheRandomBits) {
  const Problem p;
  Handles a, again, other_layer;
  make_layer(a, "quartet2");
  make_layer(again, "quartet2");
  make_layer(other_layer, "quartet2", {}, kIn, kOut, kLayer + 1);
  const Outputs first = run_c_api(a.linear, p, QUARTET_DTYPE_BFLOAT16, false);
  EXPECT_EQ(run_c_api(again.linear, p, QUARTET_DTYPE_BFLOAT16, false).dw, first.dw);
  EXPECT_NE(run_c_api(other_layer.linear, p, QUARTET_DTYPE_BFLOAT16, false).dw, first.dw);

  const Activations x = make_activations(p.x, QUARTET_DTYPE_BFLOAT16), dy = make_activations(p.dy, QUARTET_DTYPE_BFLOAT16);
  Activations dx = empty_like(kTokens * kIn, QUARTET_DTYPE_BFLOAT16);
  std::vector<float> dw(static_cast<std::size_t>(kOut * kIn));
  ASSERT_EQ(quartet_linear_backward(a.linear, nullptr, x.data(), p.w.data(), dy.data(), QUARTET_DTYPE_BFLOAT16, kTokens,
                                    dx.data(), dw.data(), 0, kCall + 1, nullptr),
            QUARTET_OK)
      << quartet_last_error();
  EXPECT_NE(0, std::memcmp(dw.data(), first.dw.data(), first.dw.size())) << "call " << kCall + 1 << " drew the same bits";
}

// ---- errors ----

std::string message() { return quartet_last_error(); }

TEST(CApiErrors, ContextArguments) {
  quartet_context* c = nullptr;
  EXPECT_EQ(quartet_context_create(QUARTET_DEVICE_CPU, 1, &c), QUARTET_ERROR_FAILED);
  EXPECT_NE(message().find("device_index: the CPU has one device, index 0, got 1"), std::string::npos) << message();
  EXPECT_EQ(c, nullptr);
  EXPECT_EQ(quartet_context_create(static_cast<quartet_device_type>(5), 0, &c), QUARTET_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(message().find("got 5"), std::string::npos) << message();
  EXPECT_EQ(quartet_context_create(QUARTET_DEVICE_CPU, 0, nullptr), QUARTET_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(message().find("quartet_context_create: out is null"), std::string::npos) << message();
  if (!quartet_cuda_built()) {
    EXPECT_EQ(quartet_context_create(QUARTET_DEVICE_CUDA, 0, &c), QUARTET_ERROR_UNSUPPORTED);
    EXPECT_NE(message().find("no CUDA backend"), std::string::npos) << message();
  }
}

TEST(CApiErrors, LayerArguments) {
  quartet_context* c = nullptr;
  ASSERT_EQ(quartet_context_create(QUARTET_DEVICE_CPU, 0, &c), QUARTET_OK);
  quartet_linear* l = nullptr;
  const auto create = [&](const char* recipe, std::vector<const char*> names, std::vector<const char*> values,
                          std::int64_t in, std::int64_t out, std::uint32_t layer = 0) {
    return quartet_linear_create(c, recipe, names.data(), values.data(), static_cast<int32_t>(names.size()), in, out, 0,
                                 layer, &l);
  };
  const auto expect_error = [&](quartet_status status, const std::string& part) {
    EXPECT_EQ(status, QUARTET_ERROR_INVALID_ARGUMENT) << message();
    EXPECT_NE(message().find(part), std::string::npos) << "message '" << message() << "' lacks '" << part << "'";
    EXPECT_EQ(l, nullptr);
  };
  expect_error(create("quartet3", {}, {}, 128, 128), "unknown recipe 'quartet3'");
  expect_error(create("quartet2", {"rotation"}, {"32"}, 128, 128), "unknown recipe option 'rotation'");
  expect_error(create("quartet2", {"backward_rotation"}, {"32x"}, 128, 128),
               "recipe option backward_rotation: expected an integer, got '32x'");
  expect_error(create("quartet2", {"backward_rotation"}, {"64"}, 128, 128), "backward rotation must be 16, 32 or 128, got 64");
  expect_error(create("quartet2", {"four_over_six"}, {"yes"}, 128, 128), "expected true or false, got 'yes'");
  expect_error(create("quartet2", {"forward_clip"}, {"nan"}, 128, 128), "expected a finite number, got 'nan'");
  expect_error(create("quartet2", {"eden_group", "eden_group"}, {"16", "16"}, 128, 128), "eden_group is given twice");
  expect_error(create("bf16", {"backward_rotation"}, {"32"}, 128, 128), "no rotated backward GEMM");
  expect_error(create("quartet2", {"backward_quantizer"}, {"fancy"}, 128, 128), "unknown quantizer 'fancy'");
  expect_error(create("quartet2", {}, {}, 128, 100), "along out_features = 100, which is not a multiple of 128");
  expect_error(create("quartet1", {}, {}, 48, 128), "along in_features = 48, which is not a multiple of 32");
  expect_error(create("bf16", {}, {}, 0, 128), "in_features must be at least 1, got 0");
  expect_error(create("bf16", {}, {}, 128, -1), "out_features must be at least 1, got -1");
  expect_error(create("bf16", {}, {}, 128, 128, 0x20000000u), "layer 536870912 is too large");
  expect_error(create(nullptr, {}, {}, 128, 128), "recipe is null");
  expect_error(quartet_linear_create(c, "bf16", nullptr, nullptr, -1, 128, 128, 0, 0, &l), "option_count must be at least 0");
  EXPECT_EQ(create("bf16", {}, {}, 100, 100), QUARTET_OK) << message();  // no rotation: any size
  quartet_linear_destroy(l);
  quartet_context_destroy(c);
}

TEST(CApiErrors, CallArguments) {
  const Problem p;
  Handles h, other;
  make_layer(h, "quartet2");
  make_layer(other, "quartet2");
  const Activations x = make_activations(p.x, QUARTET_DTYPE_BFLOAT16), dy = make_activations(p.dy, QUARTET_DTYPE_BFLOAT16);
  Activations y = empty_like(kTokens * kOut, QUARTET_DTYPE_BFLOAT16), dx = empty_like(kTokens * kIn, QUARTET_DTYPE_BFLOAT16);
  std::vector<float> dw(static_cast<std::size_t>(kOut * kIn));
  const auto expect_error = [&](quartet_status status, quartet_status expected, const std::string& part) {
    EXPECT_EQ(status, expected) << message();
    EXPECT_NE(message().find(part), std::string::npos) << "message '" << message() << "' lacks '" << part << "'";
  };
  quartet_linear_saved* saved = nullptr;
  const auto forward = [&](const void* xp, quartet_dtype dtype, std::int64_t tokens, void* stream,
                           quartet_linear_saved** out) {
    return quartet_linear_forward(h.linear, xp, dtype, tokens, p.w.data(), y.data(), kCall, stream, out);
  };
  expect_error(forward(nullptr, QUARTET_DTYPE_BFLOAT16, kTokens, nullptr, &saved), QUARTET_ERROR_INVALID_ARGUMENT,
               "quartet_linear_forward: x is null");
  EXPECT_EQ(saved, nullptr);
  expect_error(forward(x.data(), static_cast<quartet_dtype>(2), kTokens, nullptr, &saved), QUARTET_ERROR_INVALID_ARGUMENT,
               "dtype: expected QUARTET_DTYPE_FLOAT32 (0) or QUARTET_DTYPE_BFLOAT16 (1), got 2");
  expect_error(forward(x.data(), QUARTET_DTYPE_BFLOAT16, 0, nullptr, &saved), QUARTET_ERROR_INVALID_ARGUMENT,
               "tokens must be at least 1, got 0");
  expect_error(forward(x.data(), QUARTET_DTYPE_BFLOAT16, 100, nullptr, &saved), QUARTET_ERROR_INVALID_ARGUMENT,
               "100 tokens is not a multiple of 128");
  EXPECT_EQ(forward(x.data(), QUARTET_DTYPE_BFLOAT16, 100, nullptr, nullptr), QUARTET_OK)
      << "inference needs no wgrad rotation: " << message();
  int stream_object = 0;
  expect_error(forward(x.data(), QUARTET_DTYPE_BFLOAT16, kTokens, &stream_object, &saved), QUARTET_ERROR_FAILED,
               "stream: a CPU context takes no CUDA stream");

  std::vector<float> bad_x = p.x;
  bad_x[5] = std::numeric_limits<float>::infinity();
  const Activations inf_x = make_activations(bad_x, QUARTET_DTYPE_BFLOAT16);
  expect_error(forward(inf_x.data(), QUARTET_DTYPE_BFLOAT16, kTokens, nullptr, &saved), QUARTET_ERROR_NON_FINITE, "inf");

  ASSERT_EQ(forward(x.data(), QUARTET_DTYPE_BFLOAT16, kTokens, nullptr, &saved), QUARTET_OK) << message();
  const auto backward = [&](quartet_linear* l, std::uint32_t call, std::int32_t accumulate, void* dw_ptr) {
    return quartet_linear_backward(l, saved, x.data(), p.w.data(), dy.data(), QUARTET_DTYPE_BFLOAT16, kTokens, dx.data(),
                                   static_cast<float*>(dw_ptr), accumulate, call, nullptr);
  };
  expect_error(backward(h.linear, kCall + 1, 0, dw.data()), QUARTET_ERROR_INVALID_ARGUMENT,
               "call: the forward that made `saved` was call 7, not 8");
  expect_error(backward(other.linear, kCall, 0, dw.data()), QUARTET_ERROR_INVALID_ARGUMENT,
               "saved: the object was made by another layer's forward");
  expect_error(backward(h.linear, kCall, 2, dw.data()), QUARTET_ERROR_INVALID_ARGUMENT, "accumulate_dw must be 0 or 1, got 2");
  expect_error(backward(h.linear, kCall, 0, nullptr), QUARTET_ERROR_INVALID_ARGUMENT, "quartet_linear_backward: dw is null");
  expect_error(quartet_linear_backward(h.linear, saved, x.data(), p.w.data(), dy.data(), QUARTET_DTYPE_BFLOAT16, 256,
                                       dx.data(), dw.data(), 0, kCall, nullptr),
               QUARTET_ERROR_INVALID_ARGUMENT, "the forward that made `saved` had 128 tokens, not 256");
  EXPECT_EQ(backward(h.linear, kCall, 0, dw.data()), QUARTET_OK) << message();
  quartet_linear_saved_destroy(saved);
}

// A layer outlives the context handle it was made from (a garbage collector frees in any order).
TEST(CApi, HandlesMayBeDestroyedInAnyOrder) {
  const Problem p;
  Handles h;
  make_layer(h, "quartet2");
  const Outputs before = run_c_api(h.linear, p, QUARTET_DTYPE_BFLOAT16, false);
  quartet_context_destroy(h.context);
  h.context = nullptr;
  const Outputs after = run_c_api(h.linear, p, QUARTET_DTYPE_BFLOAT16, false);
  EXPECT_EQ(after.dw, before.dw);
}

}  // namespace
}  // namespace quartet

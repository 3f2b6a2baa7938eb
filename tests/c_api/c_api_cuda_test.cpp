// The C interface on a CUDA context against the C++ layer on the CUDA backend (run on the GPU
// machine; every test skips without a GPU): the same inputs, seed, layer and call give the same
// bits, on the default stream and on a caller's non-blocking stream; and memory the context
// cannot read is refused by name.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "quartet/backend/cuda.h"
#include "quartet/c_api.h"
#include "quartet/nn/linear.h"
#include "quartet/nn/recipe.h"

namespace quartet {
namespace {

const std::vector<std::string> kRecipes = {"bf16", "nvidia", "nvidia+4/6", "tetrajet2", "quartet2", "quartet1", "quartet1-sr"};
constexpr std::int64_t kTokens = 256, kIn = 256, kOut = 384;
constexpr std::uint64_t kSeed = 77;
constexpr std::uint32_t kLayer = 2, kCall = 5;

std::vector<double> gaussian(std::size_t n, std::uint64_t seed, double scale) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> normal(0.0, scale);
  std::vector<double> v(n);
  for (double& e : v) e = normal(gen);
  return v;
}

struct Results {
  std::vector<double> y, dx, dw;
};

class CApiCuda : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (!cuda_available()) GTEST_SKIP() << cuda_device_description();
    gpu = make_cuda_backend();
    x = upload({kTokens, kIn}, DType::bf16, gaussian(static_cast<std::size_t>(kTokens * kIn), 1, 1.0));
    w = upload({kOut, kIn}, DType::f32, gaussian(static_cast<std::size_t>(kOut * kIn), 2, 0.05));
    dy = upload({kTokens, kOut}, DType::bf16, gaussian(static_cast<std::size_t>(kTokens * kOut), 3, 0.01));
  }

  Tensor upload(const Shape& shape, DType dtype, const std::vector<double>& values) {
    Tensor t = gpu->empty(shape, dtype);
    gpu->upload(t, values);
    return t;
  }

  Results run_cpp(const std::string& name) {
    const Recipe recipe = make_recipe(name);
    Tensor y = gpu->empty({kTokens, kOut}, DType::bf16), dx = gpu->empty({kTokens, kIn}, DType::bf16);
    Tensor dw = gpu->zeros({kOut, kIn}, DType::f32);
    LinearSaved saved;
    const LinearRandom random{kSeed, kLayer, kCall};
    linear_forward(*gpu, recipe, x, w, y, saved, random);
    linear_backward(*gpu, recipe, dy, w, saved, dx, dw, random);
    gpu->raise_pending_errors();
    return {gpu->download(y), gpu->download(dx), gpu->download(dw)};
  }

  Results run_c_api(const std::string& name, cudaStream_t stream) {
    quartet_context* context = nullptr;
    quartet_linear* linear = nullptr;
    EXPECT_EQ(quartet_context_create(QUARTET_DEVICE_CUDA, 0, &context), QUARTET_OK) << quartet_last_error();
    EXPECT_EQ(quartet_linear_create(context, name.c_str(), nullptr, nullptr, 0, kIn, kOut, kSeed, kLayer, &linear),
              QUARTET_OK)
        << quartet_last_error();
    Tensor y = gpu->empty({kTokens, kOut}, DType::bf16), dx = gpu->empty({kTokens, kIn}, DType::bf16);
    Tensor dw = gpu->empty({kOut, kIn}, DType::f32);
    gpu->fill(dw, 12345.0);  // overwritten: accumulate_dw is 0
    cudaDeviceSynchronize();
    quartet_linear_saved* saved = nullptr;
    EXPECT_EQ(quartet_linear_forward(linear, x.raw(), QUARTET_DTYPE_BFLOAT16, kTokens, static_cast<const float*>(w.raw()),
                                     y.raw(), kCall, stream, &saved),
              QUARTET_OK)
        << quartet_last_error();
    EXPECT_EQ(quartet_linear_backward(linear, saved, x.raw(), static_cast<const float*>(w.raw()), dy.raw(),
                                      QUARTET_DTYPE_BFLOAT16, kTokens, dx.raw(), static_cast<float*>(dw.raw()), 0, kCall,
                                      stream),
              QUARTET_OK)
        << quartet_last_error();
    EXPECT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    EXPECT_EQ(quartet_context_check_errors(context), QUARTET_OK) << quartet_last_error();
    quartet_linear_saved_destroy(saved);
    quartet_linear_destroy(linear);
    quartet_context_destroy(context);
    return {gpu->download(y), gpu->download(dx), gpu->download(dw)};
  }

  std::unique_ptr<Backend> gpu;
  Tensor x, w, dy;
};

TEST_P(CApiCuda, MatchesTheLayerBitwise) {
  const Results expected = run_cpp(GetParam());
  const Results on_default = run_c_api(GetParam(), nullptr);
  EXPECT_EQ(on_default.y, expected.y);
  EXPECT_EQ(on_default.dx, expected.dx);
  EXPECT_EQ(on_default.dw, expected.dw);
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  const Results on_stream = run_c_api(GetParam(), stream);
  cudaStreamDestroy(stream);
  EXPECT_EQ(on_stream.y, expected.y);
  EXPECT_EQ(on_stream.dx, expected.dx);
  EXPECT_EQ(on_stream.dw, expected.dw);
}

INSTANTIATE_TEST_SUITE_P(Recipes, CApiCuda, ::testing::ValuesIn(kRecipes), [](const auto& test) {
  std::string name = test.param;
  for (char& c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return name;
});

TEST(CApiCudaErrors, HostMemoryIsRefusedByName) {
  if (!cuda_available()) GTEST_SKIP() << cuda_device_description();
  quartet_context* context = nullptr;
  quartet_linear* linear = nullptr;
  ASSERT_EQ(quartet_context_create(QUARTET_DEVICE_CUDA, 0, &context), QUARTET_OK) << quartet_last_error();
  ASSERT_EQ(quartet_linear_create(context, "quartet2", nullptr, nullptr, 0, 128, 128, 0, 0, &linear), QUARTET_OK);
  std::vector<std::uint16_t> host(128 * 128);
  std::vector<float> host_w(128 * 128);
  EXPECT_EQ(quartet_linear_forward(linear, host.data(), QUARTET_DTYPE_BFLOAT16, 128, host_w.data(), host.data(), 0, nullptr,
                                   nullptr),
            QUARTET_ERROR_FAILED);
  EXPECT_NE(std::string(quartet_last_error()).find("x: expected memory of CUDA device 0"), std::string::npos)
      << quartet_last_error();
  int count = 0;
  cudaGetDeviceCount(&count);
  quartet_context* missing = nullptr;
  EXPECT_EQ(quartet_context_create(QUARTET_DEVICE_CUDA, count, &missing), QUARTET_ERROR_FAILED);
  EXPECT_EQ(missing, nullptr);
  EXPECT_NE(std::string(quartet_last_error()).find("does not exist"), std::string::npos) << quartet_last_error();
  quartet_linear_destroy(linear);
  quartet_context_destroy(context);
}

}  // namespace
}  // namespace quartet

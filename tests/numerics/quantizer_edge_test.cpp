// Edge cases of every quantizer: zeros, outliers, E4M3-subnormal block scales, single rows,
// shapes that are not multiples of the group, bad values and bad parameters.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "quartet/error.h"
#include "quartet/numerics/quantizer.h"
#include "support/test_support.h"

namespace quartet {
namespace {

std::string name_of(const ::testing::TestParamInfo<QuantizerKind>& info) { return std::string(quantizer_name(info.param)); }

class EveryQuantizer : public ::testing::TestWithParam<QuantizerKind> {
 protected:
  QuantizerSpec spec() const { return QuantizerSpec::defaults(GetParam()); }
  QuantizedTensor run(const std::vector<float>& x, std::int64_t rows, std::int64_t cols) const {
    return quantize(ConstMatrixView(x.data(), rows, cols), spec(), Rotation::none(), RandomContext{9, 8, 7});
  }
};

bool all_finite(const std::vector<float>& v) {
  for (float f : v) {
    if (!std::isfinite(f)) return false;
  }
  return true;
}

TEST_P(EveryQuantizer, AllZeroTensorGivesZerosAndUnitTensorScaleOrTheFormatsOwn) {
  const std::vector<float> x(3 * 64, 0.0f);
  const QuantizedTensor q = run(x, 3, 64);
  q.validate();
  for (float v : dequantize(q)) EXPECT_EQ(v, 0.0f);
  for (std::uint8_t b : q.codes) EXPECT_EQ(b & 0x77, 0);
  if (q.format == ElementFormat::nvfp4) {
    EXPECT_EQ(q.tensor_scale, 1.0f);
  }
}

TEST_P(EveryQuantizer, AZeroGroupAmongNonZeroGroupsStaysZero) {
  std::vector<float> x = testing::gaussian_matrix(2, 128, 1);
  for (int c = 32; c < 64; ++c) x[c] = 0.0f;  // one all-zero 32-group in row 0 (two 16-groups)
  const std::vector<float> d = dequantize(run(x, 2, 128));
  for (int c = 32; c < 64; ++c) EXPECT_EQ(d[c], 0.0f) << c;
  EXPECT_TRUE(all_finite(d));
}

TEST_P(EveryQuantizer, OneHugeOutlierStaysFiniteAndIsRepresented) {
  std::vector<float> x = testing::gaussian_matrix(4, 64, 2);
  x[70] = 1e30f;
  const std::vector<float> d = dequantize(run(x, 4, 64));
  EXPECT_TRUE(all_finite(d));
  if (GetParam() == QuantizerKind::mxfp4_quest) {
    EXPECT_GT(d[70], 0.0f);  // QuEST clips by the group's spread: only the sign survives for sure
  } else {
    EXPECT_NEAR(d[70], 1e30, 0.34e30) << "relative error of one FP4 step at most";
  }
}

TEST_P(EveryQuantizer, SingleRowAndPaddedColumns) {
  for (std::int64_t cols : {1, 15, 17, 40, 100}) {
    const std::vector<float> x = testing::gaussian_matrix(1, cols, static_cast<std::uint64_t>(cols));
    const QuantizedTensor q = run(x, 1, cols);
    q.validate();
    EXPECT_EQ(q.rows, 1);
    EXPECT_EQ(q.cols, cols);
    EXPECT_EQ(q.padded_cols() % q.group_size(), 0);
    for (std::int64_t c = cols; c < q.padded_cols(); ++c) EXPECT_EQ(q.code(0, c) & 7, 0) << "padding must be zero";
    const std::vector<float> d = dequantize(q);
    ASSERT_EQ(static_cast<std::int64_t>(d.size()), cols);
    double err = 0, norm = 0;
    for (std::int64_t c = 0; c < cols; ++c) {
      err += (d[c] - x[c]) * (d[c] - x[c]);
      norm += x[c] * x[c];
    }
    EXPECT_LT(err, 0.5 * norm + 1e-12) << "cols " << cols;  // a loose sanity bound for 4 bits
  }
}

TEST_P(EveryQuantizer, RejectsNonFiniteInputNamingThePosition) {
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                    -std::numeric_limits<float>::infinity()}) {
    std::vector<float> x = testing::gaussian_matrix(3, 32, 3);
    x[2 * 32 + 5] = bad;
    try {
      run(x, 3, 32);
      FAIL() << "expected an error for " << bad;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("(2, 5)"), std::string::npos) << e.what();
    }
  }
}

TEST_P(EveryQuantizer, RejectsEmptyShapesAndMisfitRotations) {
  const std::vector<float> x(64, 1.0f);
  EXPECT_THROW(quantize(ConstMatrixView(x.data(), 0, 64), spec(), Rotation::none(), {}), Error);
  EXPECT_THROW(quantize(ConstMatrixView(x.data(), 1, 0), spec(), Rotation::none(), {}), Error);
  EXPECT_THROW(quantize(ConstMatrixView(nullptr, 1, 64), spec(), Rotation::none(), {}), Error);
  EXPECT_THROW(quantize(ConstMatrixView(x.data(), 1, 48), spec(), Rotation::hadamard(32), {}), Error);
  EXPECT_THROW(quantize(ConstMatrixView(x.data(), 2, 32, 16), spec(), Rotation::none(), {}), Error);  // ld < cols
}

INSTANTIATE_TEST_SUITE_P(All, EveryQuantizer, ::testing::ValuesIn(kAllQuantizers), name_of);

// A row 10^5 below the tensor maximum gets block scales in the E4M3 subnormal range
// (m / (V t) < 2^-6): they must still be exact E4M3 values and quantize consistently.
TEST(QuantizerEdge, BlockScalesInTheE4M3SubnormalRange) {
  std::vector<float> x = testing::gaussian_matrix(2, 64, 4);
  for (int c = 64; c < 128; ++c) x[c] *= 1e-5f;
  for (QuantizerKind kind : {QuantizerKind::rtn, QuantizerKind::sr, QuantizerKind::four_over_six}) {
    const QuantizedTensor q = quantize(ConstMatrixView(x.data(), 2, 64), QuantizerSpec::defaults(kind), Rotation::none(), {1, 1, 1});
    bool subnormal = false;
    for (std::int64_t g = 0; g < 4; ++g) {
      const std::uint8_t b = q.scale_byte(1, g);
      subnormal |= (b >> 3) == 0 && b != 0;
    }
    EXPECT_TRUE(subnormal) << quantizer_name(kind);
    const std::vector<float> d = dequantize(q);
    double err = 0, norm = 0;
    for (int c = 64; c < 128; ++c) {
      err += (d[c] - x[c]) * (d[c] - x[c]);
      norm += x[c] * x[c];
    }
    EXPECT_LT(err / norm, 0.6) << quantizer_name(kind) << ": coarse but not garbage";
  }
}

// NVFP4 tensors whose amax is below 2^-96 are quantized as zeros (documented in
// group_quantizers.h); MXFP4's power-of-two scales handle them exactly.
TEST(QuantizerEdge, TinyTensors) {
  std::vector<float> x = testing::gaussian_matrix(2, 64, 5);
  for (float& v : x) v *= 1e-31f;
  for (QuantizerKind kind : kAllQuantizers) {
    const QuantizedTensor q = quantize(ConstMatrixView(x.data(), 2, 64), QuantizerSpec::defaults(kind), Rotation::none(), {});
    const std::vector<float> d = dequantize(q);
    EXPECT_TRUE(all_finite(d)) << quantizer_name(kind);
    if (q.format == ElementFormat::nvfp4) {
      for (float v : d) EXPECT_EQ(v, 0.0f) << quantizer_name(kind);
    }
  }
  for (float& v : x) v *= 1e4f;  // amax ~ 3e-27: above the threshold, represented
  const QuantizedTensor q = quantize(ConstMatrixView(x.data(), 2, 64), QuantizerSpec::defaults(QuantizerKind::rtn), Rotation::none(), {});
  int nonzero = 0;
  for (float v : dequantize(q)) nonzero += v != 0.0f;
  EXPECT_GT(nonzero, 64);
}

TEST(QuantizerEdge, SpecParametersAreValidatedNotIgnored) {
  QuantizerSpec s = QuantizerSpec::defaults(QuantizerKind::four_over_six);
  s.clip = 0.9;
  EXPECT_THROW(s.validate(), Error);
  s = QuantizerSpec::defaults(QuantizerKind::rtn);
  s.headroom = 1.1;
  EXPECT_THROW(s.validate(), Error);
  s.headroom = 1.0;
  s.clip = -1;
  EXPECT_THROW(s.validate(), Error);
  s.clip = std::nan("");
  EXPECT_THROW(s.validate(), Error);
  s = QuantizerSpec::defaults(QuantizerKind::sr);
  s.headroom = 0.5;
  EXPECT_THROW(s.validate(), Error);
  const std::vector<float> x(16, 1.0f);
  EXPECT_THROW(quantize(ConstMatrixView(x.data(), 1, 16), s, Rotation::none(), {}), Error);
  EXPECT_NEAR(QuantizerSpec::defaults(QuantizerKind::ms_eden_g16).val_max(), 6.0 * 16 / 17 / 0.93, 1e-6);
  EXPECT_NEAR(QuantizerSpec::defaults(QuantizerKind::sr).val_max(), 6.0 * 16 / 17, 1e-6);
}

TEST(QuantizerEdge, UnknownNamesAreRejectedWithTheValidOnes) {
  EXPECT_EQ(parse_quantizer("ms_eden_g16"), QuantizerKind::ms_eden_g16);
  try {
    parse_quantizer("eden");
    FAIL();
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("'eden'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("ms_eden_g128"), std::string::npos) << msg;
  }
  for (QuantizerKind k : kAllQuantizers) EXPECT_EQ(parse_quantizer(quantizer_name(k)), k);
}

}  // namespace
}  // namespace quartet

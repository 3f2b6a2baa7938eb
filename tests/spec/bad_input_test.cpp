// Bad input must be rejected with quartet::Error (quantizer.h: "finite values only; rows,
// cols >= 1 ... Throws Error on bad input"), never quantized into garbage.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "quartet/error.h"
#include "quartet/numerics/quantizer.h"

namespace {

using quartet::QuantizerKind;
using quartet::QuantizerSpec;
using quartet::Rotation;

// The rotation each quantizer is used with in the recipes (numerics.md §5–6).
Rotation natural_rotation(QuantizerKind kind) {
  switch (kind) {
    case QuantizerKind::ms_eden_g16:
    case QuantizerKind::ms_eden_g128:
      return Rotation::random(128, {1u, 0u, 0u});
    case QuantizerKind::mxfp4_quest:
      return Rotation::hadamard(32);
    default:
      return Rotation::none();
  }
}

std::vector<float> ramp(std::int64_t n) {
  std::vector<float> x(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) x[i] = std::sin(0.37f * float(i)) * 3.0f;
  return x;
}

TEST(SpecBadInput, NonFiniteValuesAreRejectedByEveryQuantizer) {
  const std::int64_t rows = 4, cols = 128;
  const float bad[] = {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                       -std::numeric_limits<float>::infinity()};
  for (QuantizerKind kind : quartet::kAllQuantizers) {
    for (float b : bad) {
      for (std::int64_t pos : {std::int64_t{0}, std::int64_t{2 * cols + 77}, rows * cols - 1}) {
        std::vector<float> x = ramp(rows * cols);
        // Sanity: the clean input is accepted.
        if (pos == 0 && std::isnan(b)) {
          EXPECT_NO_THROW(quartet::quantize(quartet::ConstMatrixView(x.data(), rows, cols),
                                            QuantizerSpec::defaults(kind), natural_rotation(kind), {}))
              << quartet::quantizer_name(kind);
        }
        x[static_cast<std::size_t>(pos)] = b;
        EXPECT_THROW(quartet::quantize(quartet::ConstMatrixView(x.data(), rows, cols), QuantizerSpec::defaults(kind),
                                       natural_rotation(kind), {}),
                     quartet::Error)
            << quartet::quantizer_name(kind) << " value " << b << " at " << pos;
      }
    }
  }
}

TEST(SpecBadInput, ValuesOutsideTheViewAreIgnored) {
  // A strided view: NaNs in the gap between rows are not part of the matrix.
  const std::int64_t rows = 3, cols = 32, ld = 40;
  std::vector<float> strided(static_cast<std::size_t>(rows * ld), std::numeric_limits<float>::quiet_NaN());
  const std::vector<float> dense = ramp(rows * cols);
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c) strided[r * ld + c] = dense[r * cols + c];
  for (QuantizerKind kind : {QuantizerKind::rtn, QuantizerKind::sr, QuantizerKind::mxfp4_rtn}) {
    const auto spec = QuantizerSpec::defaults(kind);
    quartet::QuantizedTensor a, b;
    ASSERT_NO_THROW(a = quartet::quantize(quartet::ConstMatrixView(strided.data(), rows, cols, ld), spec,
                                          Rotation::none(), {2u, 0u, 0u}));
    b = quartet::quantize(quartet::ConstMatrixView(dense.data(), rows, cols), spec, Rotation::none(), {2u, 0u, 0u});
    EXPECT_EQ(a.codes, b.codes) << quartet::quantizer_name(kind);
    EXPECT_EQ(a.scales, b.scales);
    EXPECT_EQ(a.tensor_scale, b.tensor_scale);
  }
}

TEST(SpecBadInput, EmptyShapesAreRejected) {
  const std::vector<float> x = ramp(64);
  for (QuantizerKind kind : {QuantizerKind::rtn, QuantizerKind::sr, QuantizerKind::mxfp4_rtn, QuantizerKind::four_over_six}) {
    const auto spec = QuantizerSpec::defaults(kind);
    EXPECT_THROW(quartet::quantize(quartet::ConstMatrixView(x.data(), 0, 32), spec, Rotation::none(), {}), quartet::Error);
    EXPECT_THROW(quartet::quantize(quartet::ConstMatrixView(x.data(), 2, 0), spec, Rotation::none(), {}), quartet::Error);
  }
}

TEST(SpecBadInput, RotationMustDivideTheColumns) {
  const std::vector<float> x = ramp(2 * 96);
  EXPECT_THROW(quartet::quantize(quartet::ConstMatrixView(x.data(), 2, 96), QuantizerSpec::defaults(QuantizerKind::rtn),
                                 Rotation::hadamard(128), {}),
               quartet::Error);
  EXPECT_THROW(quartet::quantize(quartet::ConstMatrixView(x.data(), 2, 96),
                                 QuantizerSpec::defaults(QuantizerKind::ms_eden_g16), Rotation::random(128, {}), {}),
               quartet::Error);
  EXPECT_NO_THROW(quartet::quantize(quartet::ConstMatrixView(x.data(), 2, 96),
                                    QuantizerSpec::defaults(QuantizerKind::rtn), Rotation::hadamard(32), {}));
}

TEST(SpecBadInput, UnknownQuantizerNameIsRejectedAndNamed) {
  for (const char* name : {"nonsense", "", "ms_eden_g64", "rtn_rtn"}) {
    EXPECT_THROW(quartet::parse_quantizer(name), quartet::Error) << "'" << name << "'";
    EXPECT_THROW(QuantizerSpec::parse(name), quartet::Error) << "'" << name << "'";
  }
  try {
    quartet::parse_quantizer("nonsense");
    FAIL() << "no exception";
  } catch (const quartet::Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("nonsense"), std::string::npos) << msg;
    // ... and lists the valid names (quantizer.h)
    for (QuantizerKind k : quartet::kAllQuantizers)
      EXPECT_NE(msg.find(std::string(quartet::quantizer_name(k))), std::string::npos) << msg;
  }
}

TEST(SpecBadInput, MeaninglessParametersAreRejected) {
  const std::vector<float> x = ramp(2 * 32);
  for (double clip : {0.0, -1.0, std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity()}) {
    QuantizerSpec spec = QuantizerSpec::defaults(QuantizerKind::rtn);
    spec.clip = clip;
    EXPECT_THROW(spec.validate(), quartet::Error) << "clip " << clip;
    EXPECT_THROW(quartet::quantize(quartet::ConstMatrixView(x.data(), 2, 32), spec, Rotation::none(), {}), quartet::Error)
        << "clip " << clip;
  }
  // Quantizers without a parameter reject one instead of ignoring it (quantizer.h).
  QuantizerSpec fos = QuantizerSpec::defaults(QuantizerKind::four_over_six);
  EXPECT_NO_THROW(fos.validate());
  fos.clip = 0.9;
  EXPECT_THROW(fos.validate(), quartet::Error);
}

}  // namespace

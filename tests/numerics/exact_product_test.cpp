// fadd_exact_product(b, c, a) is fadd(fmul(b, c), a) on the host and one FMA on the device. The
// two agree bit for bit when b * c is exact; the quantizers use it where that holds (4/6's
// candidate error, an E2M1 magnitude times an E4M3 scale) and where it holds except for
// subnormal products whose difference cannot reach the result (QuEST's deviations, which are
// squared). std::fma is the IEEE operation the device's FMA performs, so these CPU tests check
// the claims the GPU's bitwise agreement rests on.
#include "quartet/numerics/host_device.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>

#include "quartet/numerics/e2m1.h"
#include "quartet/numerics/e4m3.h"

namespace quartet {
namespace {

std::uint32_t bits(float v) { return float_bits(v); }

// Every E2M1 magnitude times every finite E4M3 scale, against values a spread over the range of
// |y| / t and placed on and next to the rounding ties of a - q s.
TEST(ExactProduct, FourOverSixErrorIsTheSameAsOneFma) {
  std::mt19937 rng(71);
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  std::int64_t checked = 0;
  for (std::uint32_t code = 0; code < 8; ++code) {
    const float q = e2m1_magnitude(code);
    for (int sb = 0; sb < 0x7F; ++sb) {
      const float s = e4m3_decode(static_cast<std::uint8_t>(sb));
      const double exact = static_cast<double>(q) * s;
      ASSERT_EQ(static_cast<double>(fmul(q, s)), exact) << "q " << q << " s " << s << ": the product must be exact";
      for (int k = 0; k < 64; ++k) {
        // a on a wide log scale, and a near q s so that the difference has few bits
        float a = std::ldexp(unit(rng), static_cast<int>(rng() % 40) - 20);
        if (k % 2 == 1 && q != 0.0f) a = std::nextafter(static_cast<float>(exact), (k % 4 == 1) ? 0.0f : 1e30f);
        if (k % 8 == 3) a = static_cast<float>(exact) * 1.5f;
        const float two_steps = fadd_exact_product(-q, s, a);
        const float one_fma = std::fma(-q, s, a);
        ASSERT_EQ(bits(two_steps), bits(one_fma)) << "q " << q << " s " << s << " a " << a;
        ++checked;
      }
    }
  }
  EXPECT_EQ(checked, 8 * 0x7F * 64);
}

// y p - mean with p = 2^-e: exact unless y p is subnormal. Then the FMA (exact y p) and the two
// steps (y p rounded first) may differ only where |mean| < 2^-100, and there the deviation's
// square underflows to 0 in both. Drawn over the subnormal products, tiny and ordinary means,
// and means that put a - mean right at a rounding tie of the subnormal grid.
TEST(ExactProduct, QuestDeviationSquaresAgreeEvenForSubnormalProducts) {
  std::mt19937 rng(72);
  std::uniform_real_distribution<float> unit(1.0f, 2.0f);
  int subnormal_products = 0, differing_deviations = 0;
  for (int i = 0; i < 400000; ++i) {
    const int e = 100 + static_cast<int>(rng() % 27);                        // p = 2^-e, e up to 126
    const float p = std::ldexp(1.0f, -e);
    const float y = std::ldexp(unit(rng), -static_cast<int>(rng() % 24));  // y p in [2^-149, 2^-99]
    const float y_signed = (rng() & 1) ? -y : y;
    float mean;
    switch (i % 4) {
      case 0: mean = 0.0f; break;
      case 1: mean = std::ldexp(unit(rng), -static_cast<int>(100 + rng() % 50)); break;  // tiny
      case 2: mean = std::ldexp(unit(rng), -static_cast<int>(rng() % 100)); break;       // ordinary
      default: mean = fmul(y_signed, p); break;  // the rounded product: the difference is a tie or 0
    }
    if ((rng() & 1) != 0) mean = -mean;
    const float product = fmul(y_signed, p);
    if (std::fabs(product) < kFloatMinNormal) ++subnormal_products;
    const float two_steps = fadd_exact_product(y_signed, p, -mean);
    const float one_fma = std::fma(y_signed, p, -mean);
    if (bits(two_steps) != bits(one_fma)) {
      ++differing_deviations;
      ASSERT_LT(std::fabs(mean), std::ldexp(1.0f, -100)) << "y " << y_signed << " p " << p << " mean " << mean;
    }
    ASSERT_EQ(bits(fmul(two_steps, two_steps)), bits(fmul(one_fma, one_fma)))
        << "y " << y_signed << " p " << p << " mean " << mean;
  }
  // The draws do reach the case the argument is about.
  EXPECT_GT(subnormal_products, 100000);
  EXPECT_GT(differing_deviations, 0);
}

}  // namespace
}  // namespace quartet

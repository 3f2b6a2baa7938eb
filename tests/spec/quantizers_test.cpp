// Independent tests of the quantizers of numerics.md §5–6 through quartet::quantize, against
// straightforward double-precision references written here from the spec text alone.
//
// How the references are compared. The implementation evaluates every formula in FP32 (in
// an order of its choosing, e.g. one reciprocal per group and then multiplies); the references
// evaluate the same formulas in double. The two can only disagree where a rounding decision
// sits within a few FP32 ulps of its boundary: an E2M1/E4M3 midpoint, a power of two (MXFP4
// scale), the 4/6 error comparison, or a stochastic-rounding coin u ~ p. For each decision the
// reference therefore also reports whether it is "near a tie" (relative distance below 1e-5,
// i.e. ~80 FP32 ulps — the FP32 evaluations of the spec's formulas involve at most a handful
// of roundings each, < 1e-6 relative), and a disagreement is accepted only there, and only if
// the implementation picked the other neighbour of that very boundary. Such acceptances are
// counted and must stay rare (with random inputs the chance of landing within 1e-5 of a
// boundary is ~1e-4 per decision, so we allow max(2, decisions / 1000)). Everything else must
// agree exactly (codes, scales) or to FP32 accuracy (tensor scales, dequantized values).
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "quartet/error.h"
#include "quartet/numerics/hadamard.h"
#include "quartet/numerics/philox.h"
#include "quartet/numerics/quantized_tensor.h"
#include "quartet/numerics/quantizer.h"

namespace {

using quartet::QuantizedTensor;
using quartet::QuantizerKind;
using quartet::QuantizerSpec;
using quartet::RandomContext;
using quartet::Rotation;

// ---------------------------------------------------------------------------------------
// Format references (numerics.md §1).

constexpr double kE2M1[8] = {0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0};
constexpr double kNearTie = 1e-5;

double e2m1_code_value(std::uint8_t code) { return (code & 8u) ? -kE2M1[code & 7u] : kE2M1[code & 7u]; }

const std::vector<double>& e4m3_grid() {
  static const std::vector<double> grid = [] {
    std::vector<double> g;
    for (unsigned c = 0; c < 127; ++c) {
      const unsigned e = c >> 3, m = c & 7u;
      g.push_back(e == 0 ? std::ldexp(double(m), -9) : std::ldexp(1.0 + m / 8.0, int(e) - 7));
    }
    return g;
  }();
  return grid;
}

double e4m3_byte_value(std::uint8_t b) {
  if ((b & 0x7Fu) == 0x7Fu) return std::nan("");
  const double m = e4m3_grid()[b & 0x7Fu];
  return (b & 0x80u) ? -m : m;
}

struct Bracket {
  double lo, hi;  // lo <= a < hi, or lo == hi when a is at/above the top
  std::size_t index;
};

template <typename Grid>
Bracket bracket(const Grid& g, std::size_t n, double a) {
  if (a >= g[n - 1]) return {g[n - 1], g[n - 1], n - 1};
  std::size_t i = 0;
  while (!(a < g[i + 1])) ++i;
  return {g[i], g[i + 1], i};
}

template <typename Grid>
double rne(const Grid& g, std::size_t n, double a) {  // a >= 0; ties to the even index
  const Bracket b = bracket(g, n, a);
  if (b.lo == b.hi) return b.lo;
  const double mid = 0.5 * (b.lo + b.hi);
  if (a < mid) return b.lo;
  if (a > mid) return b.hi;
  return b.index % 2 == 0 ? b.lo : b.hi;
}

template <typename Grid>
bool near_mid(const Grid& g, std::size_t n, double a) {
  const Bracket b = bracket(g, n, a);
  if (b.lo == b.hi) return false;
  return std::fabs(a - 0.5 * (b.lo + b.hi)) <= kNearTie * a;
}

double e2m1_rne(double v) { return std::copysign(rne(kE2M1, 8, std::fabs(v)), v); }
bool e2m1_near_tie(double v) { return near_mid(kE2M1, 8, std::fabs(v)); }
Bracket e2m1_bracket(double a) { return bracket(kE2M1, 8, a); }
double e4m3_rne(double a) { return rne(e4m3_grid(), 127, a); }
bool e4m3_near_tie(double a) { return near_mid(e4m3_grid(), 127, a); }
Bracket e4m3_bracket(double a) { return bracket(e4m3_grid(), 127, a); }
bool e4m3_near_grid_point(double a) {
  const Bracket b = e4m3_bracket(a);
  return std::fabs(a - b.lo) <= kNearTie * a || (b.hi != b.lo && std::fabs(b.hi - a) <= kNearTie * a);
}

// The documented stochastic-rounding coin (stochastic.h, numerics.md §3).
double coin(std::uint16_t k) { return (k + 0.5) / 65536.0; }

// ---------------------------------------------------------------------------------------
// Inputs and the reference rotation.

std::int64_t round_up_to(std::int64_t v, std::int64_t m) { return (v + m - 1) / m * m; }

// rows x cols Gaussian, row r scaled by 2^(spread * (r/(rows-1) - 1/2)).
std::vector<float> make_input(std::int64_t rows, std::int64_t cols, std::uint32_t seed, double spread = 3.0) {
  std::mt19937 gen(seed);
  std::normal_distribution<double> nd(0.0, 1.0);
  std::vector<float> x(static_cast<std::size_t>(rows * cols));
  for (std::int64_t r = 0; r < rows; ++r) {
    const double s = rows > 1 ? std::exp2(spread * (double(r) / double(rows - 1) - 0.5)) : 1.0;
    for (std::int64_t c = 0; c < cols; ++c) x[r * cols + c] = static_cast<float>(s * nd(gen));
  }
  return x;
}

// y = H_n D x blockwise along each row, in double, rounded once to FP32.
std::vector<float> ref_rotate(const std::vector<float>& x, std::int64_t rows, std::int64_t cols, const Rotation& rot) {
  if (!rot.enabled()) return x;
  const int n = rot.size;
  std::vector<float> y(x.size());
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t b = 0; b < cols / n; ++b)
      for (int i = 0; i < n; ++i) {
        double acc = 0;
        for (int j = 0; j < n; ++j) {
          const double h = (std::popcount(unsigned(i & j)) % 2) ? -1.0 : 1.0;
          acc += h * rot.signs[j] * double(x[r * cols + b * n + j]);
        }
        y[r * cols + b * n + i] = static_cast<float>(acc / std::sqrt(double(n)));
      }
  return y;
}

// ---------------------------------------------------------------------------------------
// Comparison bookkeeping.

struct Checker {
  int failures = 0;
  int decisions = 0;
  int accepted_near_ties = 0;
  std::string what;

  void fail(const std::string& msg) {
    if (++failures <= 12) ADD_FAILURE() << what << ": " << msg;
  }
  void finish() {
    EXPECT_EQ(failures, 0) << what << ": " << failures << " mismatches (first 12 shown)";
    EXPECT_LE(accepted_near_ties, std::max(2, decisions / 1000))
        << what << ": too many disagreements at near-ties (" << accepted_near_ties << " of " << decisions << ")";
  }
};

std::string at(std::int64_t r, std::int64_t c) {
  std::ostringstream s;
  s << "(" << r << ", " << c << ")";
  return s.str();
}

// Accepts the implementation's E2M1 value `got` for the exact scaled value v under RNE.
void check_rne_code(Checker& ck, double v, double got, const std::string& where) {
  ++ck.decisions;
  const double want = e2m1_rne(v);
  if (got == want) return;
  const Bracket b = e2m1_bracket(std::fabs(v));
  if (e2m1_near_tie(v) && (std::fabs(got) == b.lo || std::fabs(got) == b.hi) &&
      (got == 0 || std::signbit(got) == std::signbit(v))) {
    ++ck.accepted_near_ties;
    return;
  }
  std::ostringstream s;
  s << where << " scaled value " << v << ": code decodes to " << got << ", expected RNE " << want;
  ck.fail(s.str());
}

// Accepts the implementation's E2M1 value `got` for v under SR with coin bits k: up iff
// u = (k + 0.5)/65536 < p = (|v| - lo)/(hi - lo); |v| >= 6 saturates.
void check_sr_code(Checker& ck, double v, double got, std::uint16_t k, const std::string& where) {
  ++ck.decisions;
  const double a = std::fabs(v);
  const Bracket b = e2m1_bracket(a);
  double want, alt;
  bool ambiguous;
  if (b.lo == b.hi) {
    want = 6.0;
    alt = 4.0;
    ambiguous = a - 6.0 <= kNearTie * 6.0;  // the FP32 value may fall just below 6
  } else {
    const double p = (a - b.lo) / (b.hi - b.lo);
    want = coin(k) < p ? b.hi : b.lo;
    alt = want == b.hi ? b.lo : b.hi;
    ambiguous = std::fabs(coin(k) - p) <= 1e-4;  // p is evaluated in FP32 by the implementation
    // |v| just above a grid point: the FP32 value may fall just below it, into the bracket
    // underneath, where it rounds to lo or (rarely) to the grid point below.
    if (b.index > 0 && a - b.lo <= kNearTie * a && std::fabs(got) == kE2M1[b.index - 1]) {
      alt = kE2M1[b.index - 1];
      ambiguous = true;
    }
  }
  if (got == std::copysign(want, v)) return;
  if (ambiguous && std::fabs(got) == alt && (got == 0 || std::signbit(got) == std::signbit(v))) {
    ++ck.accepted_near_ties;
    return;
  }
  std::ostringstream s;
  s << where << " SR of scaled value " << v << " with coin " << coin(k) << ": got " << got << ", expected "
    << std::copysign(want, v);
  ck.fail(s.str());
}

// Checks a block scale: `got` must equal E4M3_RNE(a) (a zero result replaced by 1), or the
// other neighbour when a is near a midpoint.
void check_block_scale_rne(Checker& ck, double a, double got, const std::string& where) {
  ++ck.decisions;
  double want = e4m3_rne(a);
  if (want == 0) want = 1;
  if (got == want) return;
  const Bracket b = e4m3_bracket(a);
  auto fix = [](double s) { return s == 0 ? 1.0 : s; };
  if (e4m3_near_tie(a) && (got == fix(b.lo) || got == fix(b.hi))) {
    ++ck.accepted_near_ties;
    return;
  }
  std::ostringstream s;
  s << where << " block scale for " << a << " (before E4M3 rounding): got " << got << ", expected " << want;
  ck.fail(s.str());
}

void check_shape(const QuantizedTensor& q, quartet::ElementFormat fmt, std::int64_t rows, std::int64_t cols) {
  ASSERT_EQ(q.format, fmt);
  ASSERT_EQ(q.rows, rows);
  ASSERT_EQ(q.cols, cols);
  const std::int64_t g = fmt == quartet::ElementFormat::nvfp4 ? 16 : 32;
  ASSERT_EQ(q.group_size(), g);
  ASSERT_EQ(q.padded_cols(), round_up_to(cols, g));
  ASSERT_NO_THROW(q.validate());
  ASSERT_EQ(q.codes.size(), static_cast<std::size_t>(rows * round_up_to(cols, g) / 2));
}

// Dequantized values must be e2m1(code) * scale * t (numerics.md §2) with the tensor's own
// codes and scales: the products code*scale are exact, so at most two FP32 roundings.
void check_dequantize_consistent(Checker& ck, const QuantizedTensor& q) {
  const std::vector<float> d = quartet::dequantize(q);
  if (d.size() != static_cast<std::size_t>(q.rows * q.cols)) {
    ck.fail("dequantize returned the wrong number of values");
    return;
  }
  const std::int64_t gs = q.group_size();
  for (std::int64_t r = 0; r < q.rows; ++r)
    for (std::int64_t c = 0; c < q.cols; ++c) {
      const double scale = q.format == quartet::ElementFormat::nvfp4 ? e4m3_byte_value(q.scale_byte(r, c / gs))
                                                                     : std::ldexp(1.0, int(q.scale_byte(r, c / gs)) - 127);
      const double want = e2m1_code_value(q.code(r, c)) * scale * double(q.tensor_scale);
      const double got = d[r * q.cols + c];
      if (std::fabs(got - want) > std::ldexp(std::fabs(want), -22)) {
        std::ostringstream s;
        s << "dequantize" << at(r, c) << " = " << got << ", expected code*scale*t = " << want;
        ck.fail(s.str());
      }
      if (q.value(r, c) != d[r * q.cols + c]) ck.fail("value() disagrees with dequantize() at " + at(r, c));
    }
}

double rel_diff(double a, double b) { return std::fabs(a - b) / std::max(std::fabs(b), 1e-300); }

// ---------------------------------------------------------------------------------------
// NVFP4 references.

enum class ElementRounding { rne, sr };

// RTN, square 16x16 and SR (numerics.md §5): t = amax/(448 V); s_g = E4M3_RNE(m_g/V/t) (0 ->
// 1); codes E2M1 of y/(s_g t), RNE or SR. y is the (rotated) input, rows x cols.
void check_rtn_family(Checker& ck, const std::vector<float>& y, std::int64_t rows, std::int64_t cols,
                      const QuantizedTensor& q, double V, bool square, ElementRounding rounding,
                      const RandomContext& ctx) {
  check_shape(q, quartet::ElementFormat::nvfp4, rows, cols);
  if (::testing::Test::HasFatalFailure()) return;
  const std::int64_t cp = round_up_to(cols, 16), groups = cp / 16;
  auto yv = [&](std::int64_t r, std::int64_t c) { return c < cols ? double(y[r * cols + c]) : 0.0; };
  double amax = 0;
  for (float v : y) amax = std::max(amax, std::fabs(double(v)));
  const double t = amax == 0 ? 1.0 : amax / (448.0 * V);
  if (rel_diff(q.tensor_scale, t) > std::ldexp(1.0, -20)) {
    std::ostringstream s;
    s << "tensor scale " << q.tensor_scale << ", expected amax/(448 V) = " << t;
    ck.fail(s.str());
  }
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t g = 0; g < groups; ++g) {
      double m = 0;
      const std::int64_t r0 = square ? r / 16 * 16 : r, r1 = square ? std::min(r0 + 16, rows) : r + 1;
      for (std::int64_t rr = r0; rr < r1; ++rr)
        for (std::int64_t c = g * 16; c < g * 16 + 16; ++c) m = std::max(m, std::fabs(yv(rr, c)));
      const double s = q.scale_value(r, g);
      if (s != e4m3_byte_value(q.scale_byte(r, g))) ck.fail("scale_value is not the E4M3 value of scale_byte at " + at(r, g));
      check_block_scale_rne(ck, m / V / t, s, "group" + at(r, g));
      for (std::int64_t c = g * 16; c < g * 16 + 16; ++c) {
        const double v = yv(r, c) / (s * t);
        const double got = e2m1_code_value(q.code(r, c));
        if (c >= cols) {
          if (got != 0) ck.fail("padding element " + at(r, c) + " is not zero");
          continue;
        }
        if (rounding == ElementRounding::rne) {
          check_rne_code(ck, v, got, "element" + at(r, c));
        } else {
          check_sr_code(ck, v, got, quartet::random_decision_bits(ctx, std::uint32_t(r), std::uint32_t(c)),
                        "element" + at(r, c));
        }
      }
    }
  }
  check_dequantize_consistent(ck, q);
}

// 4/6 (numerics.md §5): t = amax/(6*256); candidates s6 = E4M3_RNE(m/6/t), s4 = E4M3_RNE(m/4/t)
// (0 -> 1); each quantizes the group with RNE; s4 is kept only if its squared error is
// strictly smaller.
void check_four_over_six(Checker& ck, const std::vector<float>& y, std::int64_t rows, std::int64_t cols,
                         const QuantizedTensor& q, int* picked4 = nullptr, int* picked6 = nullptr) {
  check_shape(q, quartet::ElementFormat::nvfp4, rows, cols);
  if (::testing::Test::HasFatalFailure()) return;
  const std::int64_t cp = round_up_to(cols, 16), groups = cp / 16;
  auto yv = [&](std::int64_t r, std::int64_t c) { return c < cols ? double(y[r * cols + c]) : 0.0; };
  double amax = 0;
  for (float v : y) amax = std::max(amax, std::fabs(double(v)));
  const double t = amax == 0 ? 1.0 : amax / (6.0 * 256.0);
  if (rel_diff(q.tensor_scale, t) > std::ldexp(1.0, -20)) {
    std::ostringstream s;
    s << "tensor scale " << q.tensor_scale << ", expected amax/1536 = " << t;
    ck.fail(s.str());
  }
  auto fix = [](double s) { return s == 0 ? 1.0 : s; };
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t g = 0; g < groups; ++g) {
      double m = 0;
      for (std::int64_t c = g * 16; c < g * 16 + 16; ++c) m = std::max(m, std::fabs(yv(r, c)));
      const double a6 = m / 6.0 / t, a4 = m / 4.0 / t;
      const double s6 = fix(e4m3_rne(a6)), s4 = fix(e4m3_rne(a4));
      bool ambiguous = e4m3_near_tie(a6) || e4m3_near_tie(a4);
      auto err = [&](double s) {
        double e = 0;
        for (std::int64_t c = g * 16; c < g * 16 + 16; ++c) {
          const double v = yv(r, c) / (s * t);
          ambiguous |= e2m1_near_tie(v);
          const double d = yv(r, c) - e2m1_rne(v) * s * t;
          e += d * d;
        }
        return e;
      };
      const double e6 = err(s6), e4 = err(s4);
      const double diff = std::fabs(e4 - e6);
      ambiguous |= diff > 0 && diff <= kNearTie * std::max(e4, e6);
      const double want = e4 < e6 ? s4 : s6;
      const double got = q.scale_value(r, g);
      ++ck.decisions;
      if (got != want) {
        const Bracket b6 = e4m3_bracket(a6), b4 = e4m3_bracket(a4);
        const bool candidate = got == s6 || got == s4 || got == fix(b6.lo) || got == fix(b6.hi) ||
                               got == fix(b4.lo) || got == fix(b4.hi);
        if (ambiguous && candidate) {
          ++ck.accepted_near_ties;
        } else {
          std::ostringstream s;
          s << "group" << at(r, g) << ": scale " << got << ", expected " << want << " (s6 " << s6 << " err "
            << e6 << ", s4 " << s4 << " err " << e4 << ")";
          ck.fail(s.str());
        }
      }
      if (picked4 && got == s4 && s4 != s6) ++*picked4;
      if (picked6 && got == s6 && s4 != s6) ++*picked6;
      for (std::int64_t c = g * 16; c < g * 16 + 16; ++c) {
        if (c >= cols) continue;
        check_rne_code(ck, yv(r, c) / (got * t), e2m1_code_value(q.code(r, c)), "element" + at(r, c));
      }
    }
  }
  check_dequantize_consistent(ck, q);
}

// ---------------------------------------------------------------------------------------
// MS-EDEN references (numerics.md §5).

const double kEdenS = 6.0 * (16.0 / 17.0) / 0.93;

float trunc_mantissa_4(float v) { return std::bit_cast<float>(std::bit_cast<std::uint32_t>(v) & 0xFFF80000u); }

// Checks a stochastically rounded E4M3 scale `got` for the exact ratio x under coin k; x is
// computed in double here, the implementation's ratio may differ by ~1e-6 relative.
void check_sr_scale(Checker& ck, double x, double got, std::uint16_t k, const std::string& where) {
  ++ck.decisions;
  const Bracket b = e4m3_bracket(x);
  double want;
  bool ambiguous;
  if (b.lo == b.hi) {
    want = b.lo;
    ambiguous = false;
  } else {
    const double p = (x - b.lo) / (b.hi - b.lo);
    want = coin(k) < p ? b.hi : b.lo;
    ambiguous = std::fabs(coin(k) - p) <= 1e-4;
  }
  if (got == want) return;
  // The implementation's ratio may fall on the other side of a nearby grid point.
  const Bracket lo = e4m3_bracket(x * (1 - kNearTie)), hi = e4m3_bracket(x * (1 + kNearTie));
  const bool neighbour = got >= lo.lo && got <= (hi.hi == hi.lo ? hi.lo : hi.hi);
  if (neighbour && (ambiguous || e4m3_near_grid_point(x))) {
    ++ck.accepted_near_ties;
    return;
  }
  std::ostringstream s;
  s << where << ": SR scale of " << x << " with coin " << coin(k) << " gave " << got << ", expected " << want << " (from ["
    << b.lo << ", " << b.hi << "])";
  ck.fail(s.str());
}

// Canonical form (g16). Returns the reference corrected scales c_g (rows x groups, in units of
// the input) so statistical tests can reuse them.
std::vector<double> check_ms_eden_g16(Checker& ck, const std::vector<float>& y, std::int64_t rows, std::int64_t cols,
                                      const QuantizedTensor& q, const RandomContext& ctx, double eden_s = kEdenS) {
  std::vector<double> corrected;
  check_shape(q, quartet::ElementFormat::nvfp4, rows, cols);
  if (::testing::Test::HasFatalFailure()) return corrected;
  const std::int64_t groups = round_up_to(cols, 16) / 16;
  auto yv = [&](std::int64_t r, std::int64_t c) { return c < cols ? double(y[r * cols + c]) : 0.0; };
  const float s_f = static_cast<float>(eden_s);
  corrected.assign(static_cast<std::size_t>(rows * groups), 0.0);
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t g = 0; g < groups; ++g) {
      double m = 0;
      for (std::int64_t c = g * 16; c < g * 16 + 16; ++c) m = std::max(m, std::fabs(yv(r, c)));
      if (m == 0) continue;  // an all-zero group: c_g = 0, values must be 0 (checked below)
      // sigma = m / s in FP32 (a correctly rounded quotient of two floats), then its mantissa
      // truncated to 4 bits. The quotient's double value rounds to the same float (innocuous
      // double rounding); if sigma sits within 2^-22 of a 4-bit boundary, the other
      // truncation is accepted too.
      const float sigma = static_cast<float>(m / double(s_f));
      const float sigma4 = trunc_mantissa_4(sigma);
      const bool sigma_amb = trunc_mantissa_4(sigma * (1 + 1e-6f)) != sigma4 ||
                             trunc_mantissa_4(sigma * (1 - 1e-6f)) != sigma4;
      double num = 0, den = 0;
      for (std::int64_t c = g * 16; c < g * 16 + 16; ++c) {
        const double v = yv(r, c) / double(sigma4);
        const double got = e2m1_code_value(q.code(r, c));
        if (c < cols) {
          if (sigma_amb && got != e2m1_rne(v)) {
            ++ck.accepted_near_ties;
          } else {
            check_rne_code(ck, v, got, "element" + at(r, c));
          }
        }
        num += v * v;
        den += v * got;
      }
      corrected[r * groups + g] = double(sigma4) * (den == 0 ? 1.0 : num / den);
    }
  const double M = *std::max_element(corrected.begin(), corrected.end());
  const double t = M == 0 ? 1.0 : M / 256.0;
  if (rel_diff(q.tensor_scale, t) > 1e-5) {
    std::ostringstream s;
    s << "tensor scale " << q.tensor_scale << ", expected M/256 = " << t;
    ck.fail(s.str());
  }
  double max_scale = 0;
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t g = 0; g < groups; ++g) {
      const std::uint8_t byte = q.scale_byte(r, g);
      const double e = q.scale_value(r, g);
      if (e != e4m3_byte_value(byte) || (byte & 0x80u)) ck.fail("scale at " + at(r, g) + " is not a non-negative E4M3 value");
      max_scale = std::max(max_scale, e);
      if (e > 256.0) ck.fail("block scale above 256 at " + at(r, g));
      if (corrected[r * groups + g] == 0) continue;
      check_sr_scale(ck, corrected[r * groups + g] / t, e,
                     quartet::random_decision_bits(ctx, std::uint32_t(r), std::uint32_t(g)), "group" + at(r, g));
    }
  // The group with c_g = M has c_g / t = 256 exactly, a grid point.
  if (M > 0 && max_scale != 256.0) ck.fail("the largest block scale is " + std::to_string(max_scale) + ", expected 256");
  check_dequantize_consistent(ck, q);
  const std::vector<float> d = quartet::dequantize(q);
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c)
      if (corrected[r * groups + c / 16] == 0 && d[r * cols + c] != 0) ck.fail("all-zero group not zero at " + at(r, c));
  return corrected;
}

// Research form (g128). Returns the reference sigma_g * S (rows x groups) times t, i.e. the
// expectation of e_g * t.
std::vector<double> check_ms_eden_g128(Checker& ck, const std::vector<float>& y, std::int64_t rows, std::int64_t cols,
                                       const QuantizedTensor& q, const RandomContext& ctx) {
  std::vector<double> expected_scale;
  check_shape(q, quartet::ElementFormat::nvfp4, rows, cols);
  if (::testing::Test::HasFatalFailure()) return expected_scale;
  const std::int64_t groups = round_up_to(cols, 16) / 16;
  auto yv = [&](std::int64_t r, std::int64_t c) { return c < cols ? double(y[r * cols + c]) : 0.0; };
  double amax = 0;
  for (float v : y) amax = std::max(amax, std::fabs(double(v)));
  const double t = amax == 0 ? 1.0 : amax / (255.99 * kEdenS);
  if (rel_diff(q.tensor_scale, t) > std::ldexp(1.0, -20)) {
    std::ostringstream s;
    s << "tensor scale " << q.tensor_scale << ", expected amax/(255.99 s) = " << t;
    ck.fail(s.str());
  }
  expected_scale.assign(static_cast<std::size_t>(rows * groups), 0.0);
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t b = 0; b * 8 < groups; ++b) {
      double num = 0, den = 0;
      std::vector<double> sigmas;
      for (std::int64_t g = b * 8; g < std::min(groups, b * 8 + 8); ++g) {
        double m = 0;
        for (std::int64_t c = g * 16; c < g * 16 + 16; ++c) m = std::max(m, std::fabs(yv(r, c)));
        // sigma_g is not stored (the stored scale is the SR'd sigma_g * S); recompute the
        // reference and accept the other neighbour only at a near-tie, via the codes.
        double sigma = e4m3_rne(m / (t * kEdenS));
        if (sigma == 0) sigma = 1;
        const bool sigma_amb = e4m3_near_tie(m / (t * kEdenS));
        sigmas.push_back(sigma);
        for (std::int64_t c = g * 16; c < g * 16 + 16; ++c) {
          const double v = yv(r, c) / (sigma * t);
          const double got = e2m1_code_value(q.code(r, c));
          if (c < cols) {
            if (sigma_amb && got != e2m1_rne(v)) {
              ++ck.accepted_near_ties;
            } else {
              check_rne_code(ck, v, got, "element" + at(r, c));
            }
          }
          num += v * v;
          den += v * got;
        }
      }
      const double S = den == 0 ? 1.0 : num / den;
      for (std::int64_t g = b * 8; g < std::min(groups, b * 8 + 8); ++g) {
        const double x = sigmas[g - b * 8] * S;
        const double e = q.scale_value(r, g);
        if (e != e4m3_byte_value(q.scale_byte(r, g))) ck.fail("scale at " + at(r, g) + " is not its E4M3 value");
        check_sr_scale(ck, x, e, quartet::random_decision_bits(ctx, std::uint32_t(r), std::uint32_t(g)),
                       "group" + at(r, g));
        expected_scale[r * groups + g] = x * t;
      }
    }
  }
  check_dequantize_consistent(ck, q);
  return expected_scale;
}

// ---------------------------------------------------------------------------------------
// MXFP4 references (numerics.md §6).

double floor_pow2(double a) {  // 2^floor(log2 a), a > 0
  int e;
  std::frexp(a, &e);  // a = f 2^e, f in [0.5, 1)
  return std::ldexp(1.0, e - 1);
}

void check_mx_scale(Checker& ck, double a, double got, const std::string& where) {
  ++ck.decisions;
  const double want = floor_pow2(a);
  if (got == want) return;
  const double lo = floor_pow2(a * (1 - kNearTie)), hi = floor_pow2(a * (1 + kNearTie));
  if (lo != hi && (got == lo || got == hi)) {
    ++ck.accepted_near_ties;
    return;
  }
  std::ostringstream s;
  s << where << ": scale " << got << ", expected 2^floor(log2 " << a << ") = " << want;
  ck.fail(s.str());
}

// QuEST forward on y (already rotated by the fixed Hadamard-32).
void check_quest(Checker& ck, const std::vector<float>& y, std::int64_t rows, std::int64_t cols, const QuantizedTensor& q) {
  check_shape(q, quartet::ElementFormat::mxfp4, rows, cols);
  if (::testing::Test::HasFatalFailure()) return;
  EXPECT_EQ(q.tensor_scale, 1.0f) << "QuEST has no tensor factor";
  ASSERT_EQ(q.trust_mask.size(), static_cast<std::size_t>(rows * round_up_to(cols, 32) / 8));
  const std::int64_t groups = round_up_to(cols, 32) / 32;
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t g = 0; g < groups; ++g) {
      double mean = 0;
      for (std::int64_t c = g * 32; c < g * 32 + 32; ++c) mean += c < cols ? y[r * cols + c] : 0.0;
      mean /= 32;
      double var = 0;
      for (std::int64_t c = g * 32; c < g * 32 + 32; ++c) {
        const double d = (c < cols ? y[r * cols + c] : 0.0) - mean;
        var += d * d;
      }
      const double sigma = std::sqrt(var / 32);
      const double X = q.scale_value(r, g);
      if (X != std::ldexp(1.0, int(q.scale_byte(r, g)) - 127)) ck.fail("scale_value is not 2^(e-127) at " + at(r, g));
      check_mx_scale(ck, 0.48708 * sigma + 1e-8, X, "group" + at(r, g));
      for (std::int64_t c = g * 32; c < std::min(cols, g * 32 + 32); ++c) {
        const double v = y[r * cols + c] / X;
        check_rne_code(ck, v, e2m1_code_value(q.code(r, c)), "element" + at(r, c));
        const bool want_trust = std::fabs(v) < 6.0;
        const bool got_trust = q.trusted(r, c);
        const bool raw = (q.trust_mask[r * (round_up_to(cols, 32) / 8) + c / 8] >> (c % 8)) & 1u;
        if (got_trust != raw) ck.fail("trusted() disagrees with the documented mask bit at " + at(r, c));
        ++ck.decisions;
        if (got_trust != want_trust) {
          if (std::fabs(std::fabs(v) - 6.0) <= kNearTie * 6.0) {
            ++ck.accepted_near_ties;
          } else {
            ck.fail("trust bit at " + at(r, c) + " for |x/X| = " + std::to_string(std::fabs(v)));
          }
        }
      }
    }
  check_dequantize_consistent(ck, q);
}

// Quartet I backward: X = 2^floor(log2 m_g), codes of 3 y / X (RNE or SR), t = 1/3.
void check_mx_backward(Checker& ck, const std::vector<float>& y, std::int64_t rows, std::int64_t cols,
                       const QuantizedTensor& q, ElementRounding rounding, const RandomContext& ctx) {
  check_shape(q, quartet::ElementFormat::mxfp4, rows, cols);
  if (::testing::Test::HasFatalFailure()) return;
  if (rel_diff(q.tensor_scale, 1.0 / 3.0) > std::ldexp(1.0, -23)) ck.fail("tensor factor is not 1/3");
  const std::int64_t groups = round_up_to(cols, 32) / 32;
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t g = 0; g < groups; ++g) {
      double m = 0;
      for (std::int64_t c = g * 32; c < std::min(cols, g * 32 + 32); ++c) m = std::max(m, std::fabs(double(y[r * cols + c])));
      const double X = q.scale_value(r, g);
      if (X != std::ldexp(1.0, int(q.scale_byte(r, g)) - 127)) ck.fail("scale_value is not 2^(e-127) at " + at(r, g));
      if (m == 0) {
        for (std::int64_t c = g * 32; c < std::min(cols, g * 32 + 32); ++c)
          if (e2m1_code_value(q.code(r, c)) != 0) ck.fail("zero group has a non-zero code at " + at(r, c));
        continue;
      }
      check_mx_scale(ck, m, X, "group" + at(r, g));
      for (std::int64_t c = g * 32; c < std::min(cols, g * 32 + 32); ++c) {
        const double v = 3.0 * y[r * cols + c] / X;
        const double got = e2m1_code_value(q.code(r, c));
        if (rounding == ElementRounding::rne) {
          check_rne_code(ck, v, got, "element" + at(r, c));
        } else {
          check_sr_code(ck, v, got, quartet::random_decision_bits(ctx, std::uint32_t(r), std::uint32_t(c)),
                        "element" + at(r, c));
        }
      }
    }
  check_dequantize_consistent(ck, q);
}

QuantizedTensor run(const std::vector<float>& x, std::int64_t rows, std::int64_t cols, QuantizerKind kind,
                    const Rotation& rot = Rotation::none(), RandomContext ctx = {}) {
  return quartet::quantize(quartet::ConstMatrixView(x.data(), rows, cols), QuantizerSpec::defaults(kind), rot, ctx);
}

// ---------------------------------------------------------------------------------------
// Parameters.

TEST(SpecQuantizerSpec, DefaultParametersFromTheSpec) {
  EXPECT_EQ(QuantizerSpec::defaults(QuantizerKind::rtn).val_max(), 6.0f);
  EXPECT_EQ(QuantizerSpec::defaults(QuantizerKind::square16).val_max(), 6.0f);
  EXPECT_FLOAT_EQ(QuantizerSpec::defaults(QuantizerKind::sr).val_max(), static_cast<float>(6.0 * 16.0 / 17.0));
  EXPECT_FLOAT_EQ(QuantizerSpec::defaults(QuantizerKind::ms_eden_g16).val_max(), static_cast<float>(kEdenS));
  EXPECT_FLOAT_EQ(QuantizerSpec::defaults(QuantizerKind::ms_eden_g128).val_max(), static_cast<float>(kEdenS));
  EXPECT_NEAR(kEdenS, 6.0721, 1e-4);  // the spec's "≈ 6.0721"
  for (QuantizerKind k : quartet::kAllQuantizers) {
    EXPECT_EQ(quartet::parse_quantizer(quartet::quantizer_name(k)), k);
    EXPECT_EQ(QuantizerSpec::parse(quartet::quantizer_name(k)).kind, k);
  }
  for (QuantizerKind k : {QuantizerKind::rtn, QuantizerKind::four_over_six, QuantizerKind::square16, QuantizerKind::sr,
                          QuantizerKind::ms_eden_g16, QuantizerKind::ms_eden_g128})
    EXPECT_EQ(quartet::quantizer_format(k), quartet::ElementFormat::nvfp4);
  for (QuantizerKind k : {QuantizerKind::mxfp4_quest, QuantizerKind::mxfp4_rtn, QuantizerKind::mxfp4_sr})
    EXPECT_EQ(quartet::quantizer_format(k), quartet::ElementFormat::mxfp4);
  for (QuantizerKind k : {QuantizerKind::sr, QuantizerKind::ms_eden_g16, QuantizerKind::ms_eden_g128, QuantizerKind::mxfp4_sr})
    EXPECT_TRUE(quartet::is_stochastic(k));
  for (QuantizerKind k : {QuantizerKind::rtn, QuantizerKind::four_over_six, QuantizerKind::square16,
                          QuantizerKind::mxfp4_quest, QuantizerKind::mxfp4_rtn})
    EXPECT_FALSE(quartet::is_stochastic(k));
}

// ---------------------------------------------------------------------------------------
// RTN

TEST(SpecRtn, HandWorkedExample) {
  // amax = 2688 = 448 * 6 makes t = 1 exactly. Groups whose scale is a power of two put the
  // E2M1 midpoints exactly on ties (x / (s t) exact in any evaluation order).
  const std::int64_t cols = 96;
  std::vector<float> row(cols, 0.0f);
  // group 0: m = 2688 -> s = E4M3(448) = 448; scaled values 6, 2.23, -4.46, 0.22, 1.
  const float g0[] = {2688.0f, 1000.0f, -2000.0f, 100.0f, 448.0f};
  // group 1: m = 6 -> s = 1; the midpoints 0.25 .. 5 tie to the even code.
  const float g1[16] = {6.0f, 0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f,
                        -0.75f, 5.5f, 0.5f, 4.4f, 2.9f, -6.0f, 1.4f, 0.0f};
  // group 2: m = 12 -> s = 2; scaled values are the midpoints again.
  const float g2[8] = {0.5f, 1.5f, 2.5f, 3.5f, 5.0f, 7.0f, 10.0f, 12.0f};
  // group 3: all zero -> scale 0 replaced by 1.
  // group 4: m = 6 * 2^-11 -> m/V/t = 2^-11 rounds to 0 in E4M3 -> replaced by 1 -> codes 0.
  // group 5: m = 6 * 3 * 2^-9 -> s = 3 * 2^-9 (an E4M3 subnormal); scaled 6, 1, 0.4 -> 0.5.
  const float sub = 3.0f / 512.0f;
  for (int i = 0; i < 5; ++i) row[i] = g0[i];
  for (int i = 0; i < 16; ++i) row[16 + i] = g1[i];
  for (int i = 0; i < 8; ++i) row[32 + i] = g2[i];
  row[64] = 6.0f / 2048.0f;
  row[65] = -1.0f / 2048.0f;
  row[80] = 6.0f * sub;
  row[81] = 1.0f * sub;
  row[82] = -0.4f * sub;
  std::vector<float> x = row;
  for (float v : row) x.push_back(-v);  // row 1 = -row 0
  const QuantizedTensor q = run(x, 2, cols, QuantizerKind::rtn);
  ASSERT_EQ(q.rows, 2);
  ASSERT_EQ(q.cols, cols);
  EXPECT_EQ(q.tensor_scale, 1.0f);
  const double scales[6] = {448.0, 1.0, 2.0, 1.0, 1.0, 3.0 / 512.0};
  const std::uint8_t scale_bytes[6] = {0x7E, 0x38, 0x40, 0x38, 0x38, 0x03};
  for (int r = 0; r < 2; ++r)
    for (int g = 0; g < 6; ++g) {
      EXPECT_EQ(q.scale_value(r, g), scales[g]) << at(r, g);
      EXPECT_EQ(q.scale_byte(r, g), scale_bytes[g]) << at(r, g);
    }
  // Expected codes of row 0.
  std::vector<std::uint8_t> codes(cols, 0);
  const std::uint8_t c0[] = {7, 4, 8 | 6, 0, 2};  // 6, 2, -4, 0, 1
  const std::uint8_t c1[16] = {7, 0, 2, 2, 4, 4, 6, 6, 8 | 2, 7, 1, 6, 5, 8 | 7, 3, 0};
  const std::uint8_t c2[8] = {0, 2, 2, 4, 4, 6, 6, 7};
  for (int i = 0; i < 5; ++i) codes[i] = c0[i];
  for (int i = 0; i < 16; ++i) codes[16 + i] = c1[i];
  for (int i = 0; i < 8; ++i) codes[32 + i] = c2[i];
  codes[80] = 7;
  codes[81] = 2;
  codes[82] = 8 | 1;
  const std::vector<float> d = quartet::dequantize(q);
  ASSERT_EQ(d.size(), static_cast<std::size_t>(2 * cols));
  for (int c = 0; c < cols; ++c) {
    const double expected = e2m1_code_value(codes[c]) * scales[c / 16];
    EXPECT_EQ(d[c], expected) << "row 0 col " << c << " input " << row[c];
    EXPECT_EQ(d[cols + c], -expected) << "row 1 col " << c;
    if (e2m1_code_value(codes[c]) != 0) {
      EXPECT_EQ(q.code(0, c), codes[c]) << "code at col " << c;
      EXPECT_EQ(q.code(1, c), codes[c] ^ 8u) << "code at row 1 col " << c;
    } else {
      EXPECT_EQ(e2m1_code_value(q.code(0, c)), 0.0) << c;
    }
  }
  // Packing (numerics.md §2): element 2j in the low nibble, 2j+1 in the high nibble.
  for (int j = 0; j < cols / 2; ++j) {
    if (e2m1_code_value(codes[2 * j]) == 0 || e2m1_code_value(codes[2 * j + 1]) == 0) continue;
    EXPECT_EQ(q.codes[j], static_cast<std::uint8_t>(codes[2 * j] | (codes[2 * j + 1] << 4))) << "byte " << j;
  }
}

TEST(SpecRtn, MatchesDoubleReferenceOnRandomInputs) {
  for (std::uint32_t seed : {1u, 2u, 3u}) {
    const std::int64_t rows = 24, cols = 160;
    std::vector<float> x = make_input(rows, cols, seed, 10.0);  // 2^10 spread: subnormal scales too
    for (int c = 16; c < 32; ++c) x[5 * cols + c] = 0.0f;       // an all-zero group
    const QuantizedTensor q = run(x, rows, cols, QuantizerKind::rtn);
    Checker ck{.what = "rtn seed " + std::to_string(seed)};
    check_rtn_family(ck, x, rows, cols, q, 6.0, false, ElementRounding::rne, {});
    ck.finish();
  }
}

TEST(SpecRtn, NonDefaultClipSaturatesAtSix) {
  // c = 0.8: V = 7.5, so the largest elements map to 7.5 and saturate to 6.
  const std::int64_t rows = 8, cols = 64;
  const std::vector<float> x = make_input(rows, cols, 9);
  QuantizerSpec spec = QuantizerSpec::defaults(QuantizerKind::rtn);
  spec.clip = 0.8;
  EXPECT_FLOAT_EQ(spec.val_max(), 7.5f);
  const QuantizedTensor q = quartet::quantize(quartet::ConstMatrixView(x.data(), rows, cols), spec, Rotation::none(), {});
  Checker ck{.what = "rtn clip 0.8"};
  check_rtn_family(ck, x, rows, cols, q, 6.0 / 0.8, false, ElementRounding::rne, {});
  ck.finish();
  int saturated = 0;
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c) saturated += (q.code(r, c) & 7u) == 7u;
  EXPECT_GT(saturated, 0);
}

TEST(SpecRtn, AllZeroTensorHasUnitScales) {
  const std::vector<float> x(4 * 32, 0.0f);
  const QuantizedTensor q = run(x, 4, 32, QuantizerKind::rtn);
  EXPECT_EQ(q.tensor_scale, 1.0f);  // amax == 0 -> t = 1
  for (int r = 0; r < 4; ++r)
    for (int g = 0; g < 2; ++g) EXPECT_EQ(q.scale_value(r, g), 1.0f);  // 0 -> 1
  for (float v : quartet::dequantize(q)) EXPECT_EQ(v, 0.0f);
}

TEST(SpecQuantizers, AllZeroTensor) {
  // "If amax == 0 then t = 1" (numerics.md §5); everything dequantizes to 0 for every quantizer.
  const std::vector<float> x(2 * 128, 0.0f);
  for (QuantizerKind kind : quartet::kAllQuantizers) {
    const Rotation rot = kind == QuantizerKind::mxfp4_quest ? Rotation::hadamard(32)
                         : (kind == QuantizerKind::ms_eden_g16 || kind == QuantizerKind::ms_eden_g128)
                             ? Rotation::random(128, {1u, 0u, 0u})
                             : Rotation::none();
    const QuantizedTensor q = run(x, 2, 128, kind, rot, {1u, 0u, 0u});
    if (quartet::quantizer_format(kind) == quartet::ElementFormat::nvfp4) {
      EXPECT_EQ(q.tensor_scale, 1.0f) << quartet::quantizer_name(kind);
    }
    for (float v : quartet::dequantize(q)) ASSERT_EQ(v, 0.0f) << quartet::quantizer_name(kind);
    for (float v : quartet::dequantize_unrotated(q, rot)) ASSERT_EQ(v, 0.0f) << quartet::quantizer_name(kind);
  }
}

TEST(SpecRtn, RotationIsAppliedBeforeQuantizing) {
  // quantize(x, rtn, H D) quantizes y = H D x: compare with the reference on our own y.
  for (int n : {16, 32, 128}) {
    const std::int64_t rows = 6, cols = 256;
    const std::vector<float> x = make_input(rows, cols, 40u + n);
    const Rotation rot = Rotation::random(n, {123u, 4u, 5u});
    const QuantizedTensor q = run(x, rows, cols, QuantizerKind::rtn, rot);
    EXPECT_EQ(q.rotation_size, n);
    const std::vector<float> y = ref_rotate(x, rows, cols, rot);
    Checker ck{.what = "rtn after RHT-" + std::to_string(n)};
    check_rtn_family(ck, y, rows, cols, q, 6.0, false, ElementRounding::rne, {});
    ck.finish();
    // dequantize_unrotated = D H applied to the dequantized (rotated-domain) values.
    const std::vector<float> d = quartet::dequantize(q), u = quartet::dequantize_unrotated(q, rot);
    ASSERT_EQ(u.size(), d.size());
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t b = 0; b < cols / n; ++b) {
        double norm = 0;
        for (int i = 0; i < n; ++i) norm += double(d[r * cols + b * n + i]) * d[r * cols + b * n + i];
        for (int i = 0; i < n; ++i) {
          double acc = 0;
          for (int j = 0; j < n; ++j)
            acc += ((std::popcount(unsigned(i & j)) % 2) ? -1.0 : 1.0) * d[r * cols + b * n + j];
          acc = acc / std::sqrt(double(n)) * rot.signs[i];
          // FP32 Hadamard bound, see hadamard_test.cpp
          EXPECT_NEAR(u[r * cols + b * n + i], acc, 10 * std::ldexp(1.0, -24) * std::sqrt(norm) + 1e-30);
        }
      }
  }
}

// ---------------------------------------------------------------------------------------
// 4/6

TEST(SpecFourOverSix, HandWorkedExample) {
  // amax = 1536 makes t = amax / (6 * 256) = 1.
  std::vector<float> x(64, 0.0f);
  // group 0: m = 1536: s6 = 256 and s4 = 384 are both exact (errors 0, 0) except for 128,
  // which only s6 represents: keep s6.
  x[0] = 1536.0f;
  x[1] = 128.0f;
  // group 1: m = 4: s6 = E4M3(2/3) = 0.6875 (error > 0); s4 = 1 represents all exactly.
  const float g1[] = {4.0f, 3.0f, 2.0f, 1.5f, 1.0f, 0.5f, -3.0f};
  for (int i = 0; i < 7; ++i) x[16 + i] = g1[i];
  // group 2: m = 6: s6 = 1 exact; s4 = 1.5 cannot represent 0.5: keep s6.
  x[32] = 6.0f;
  x[33] = 0.5f;
  // group 3: m = 6 alone: both candidates exact, equal errors: keep s6 (strictly smaller).
  x[48] = -6.0f;
  const QuantizedTensor q = run(x, 1, 64, QuantizerKind::four_over_six);
  EXPECT_EQ(q.tensor_scale, 1.0f);
  EXPECT_EQ(q.scale_value(0, 0), 256.0f);
  EXPECT_EQ(q.scale_value(0, 1), 1.0f);
  EXPECT_EQ(q.scale_value(0, 2), 1.0f);
  EXPECT_EQ(q.scale_value(0, 3), 1.0f);
  const std::vector<float> d = quartet::dequantize(q);
  for (int c = 0; c < 64; ++c) EXPECT_EQ(d[c], x[c]) << "col " << c;  // every value is exact here
}

TEST(SpecFourOverSix, MatchesDoubleReferenceOnRandomInputs) {
  int picked4 = 0, picked6 = 0;
  for (std::uint32_t seed : {11u, 12u}) {
    const std::int64_t rows = 32, cols = 128;
    const std::vector<float> x = make_input(rows, cols, seed, 6.0);
    const Rotation rot = Rotation::random(128, {seed, 0u, 0u});
    const QuantizedTensor q = run(x, rows, cols, QuantizerKind::four_over_six, rot);
    const std::vector<float> y = ref_rotate(x, rows, cols, rot);
    Checker ck{.what = "4/6 seed " + std::to_string(seed)};
    check_four_over_six(ck, y, rows, cols, q, &picked4, &picked6);
    ck.finish();
  }
  // Both candidates must actually occur for the comparison to have been exercised.
  EXPECT_GT(picked4, 10);
  EXPECT_GT(picked6, 10);
}

// ---------------------------------------------------------------------------------------
// Square 16x16

TEST(SpecSquare16, MatchesDoubleReferenceWithTileScales) {
  const std::int64_t rows = 32, cols = 48;
  const std::vector<float> x = make_input(rows, cols, 21, 5.0);
  const QuantizedTensor q = run(x, rows, cols, QuantizerKind::square16);
  EXPECT_TRUE(q.square_blocks);
  Checker ck{.what = "square16"};
  check_rtn_family(ck, x, rows, cols, q, 6.0, true, ElementRounding::rne, {});
  ck.finish();
  // One scale per tile: all 16 rows of a tile agree.
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t g = 0; g < 3; ++g) EXPECT_EQ(q.scale_value(r, g), q.scale_value(r / 16 * 16, g)) << at(r, g);
}

TEST(SpecSquare16, PartialTiles) {
  // R and C not multiples of 16: a tile is the existing rows of its 16-row band (C is
  // zero-padded, numerics.md §2, which cannot change a maximum of absolute values). An
  // implementation may instead refuse such shapes, but only with quartet::Error.
  const std::int64_t rows = 24, cols = 40;
  const std::vector<float> x = make_input(rows, cols, 23, 5.0);
  QuantizedTensor q;
  try {
    q = run(x, rows, cols, QuantizerKind::square16);
  } catch (const quartet::Error&) {
    SUCCEED() << "square16 refuses rows % 16 != 0";
    return;
  }
  Checker ck{.what = "square16 partial tiles"};
  check_rtn_family(ck, x, rows, cols, q, 6.0, true, ElementRounding::rne, {});
  ck.finish();
  std::vector<float> xt(x.size());
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c) xt[c * rows + r] = x[r * cols + c];
  const std::vector<float> d = quartet::dequantize(q), dt = quartet::dequantize(run(xt, cols, rows, QuantizerKind::square16)),
                           dtq = quartet::dequantize(quartet::transpose_square_blocks(q));
  ASSERT_EQ(dt.size(), d.size());
  ASSERT_EQ(dtq.size(), d.size());
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c) {
      EXPECT_EQ(dt[c * rows + r], d[r * cols + c]) << at(r, c);
      EXPECT_EQ(dtq[c * rows + r], d[r * cols + c]) << at(r, c);
    }
}

TEST(SpecSquare16, TensorAndTransposeHoldIdenticalValues) {
  const std::int64_t rows = 32, cols = 64;
  const std::vector<float> x = make_input(rows, cols, 22, 5.0);
  std::vector<float> xt(x.size());
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c) xt[c * rows + r] = x[r * cols + c];
  const QuantizedTensor q = run(x, rows, cols, QuantizerKind::square16);
  const QuantizedTensor qt = run(xt, cols, rows, QuantizerKind::square16);
  const QuantizedTensor tq = quartet::transpose_square_blocks(q);
  ASSERT_EQ(tq.rows, cols);
  ASSERT_EQ(tq.cols, rows);
  const std::vector<float> d = quartet::dequantize(q), dt = quartet::dequantize(qt), dtq = quartet::dequantize(tq);
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c) {
      // The same tile maximum, the same t, the same x/(s t): bit-identical values.
      EXPECT_EQ(dt[c * rows + r], d[r * cols + c]) << "quantize(x^T) vs quantize(x) at " << at(r, c);
      EXPECT_EQ(dtq[c * rows + r], d[r * cols + c]) << "transpose_square_blocks at " << at(r, c);
    }
  Checker ck{.what = "square16 transpose"};
  check_rtn_family(ck, xt, cols, rows, tq, 6.0, true, ElementRounding::rne, {});
  ck.finish();
}

// ---------------------------------------------------------------------------------------
// SR

TEST(SpecSr, MatchesDoubleReferenceWithDocumentedCoins) {
  // Element (r, c) uses decision c of row r (philox.h); everything else is RTN-like with V = 6/h.
  const std::int64_t rows = 16, cols = 96;
  const std::vector<float> x = make_input(rows, cols, 31, 4.0);
  for (std::uint32_t call : {0u, 1u, 2u}) {
    const RandomContext ctx{0x5EEDull, 3u, call};
    const QuantizedTensor q = run(x, rows, cols, QuantizerKind::sr, Rotation::none(), ctx);
    Checker ck{.what = "sr call " + std::to_string(call)};
    check_rtn_family(ck, x, rows, cols, q, 6.0 / (17.0 / 16.0), false, ElementRounding::sr, ctx);
    ck.finish();
  }
}

TEST(SpecSr, NonDefaultHeadroom) {
  // h = 1.25: V = 4.8.
  const std::int64_t rows = 8, cols = 64;
  const std::vector<float> x = make_input(rows, cols, 34, 3.0);
  QuantizerSpec spec = QuantizerSpec::defaults(QuantizerKind::sr);
  spec.headroom = 1.25;
  EXPECT_FLOAT_EQ(spec.val_max(), 4.8f);
  const RandomContext ctx{34u, 0u, 0u};
  const QuantizedTensor q = quartet::quantize(quartet::ConstMatrixView(x.data(), rows, cols), spec, Rotation::none(), ctx);
  Checker ck{.what = "sr headroom 1.25"};
  check_rtn_family(ck, x, rows, cols, q, 4.8, false, ElementRounding::sr, ctx);
  ck.finish();
}

TEST(SpecSr, SameContextSameBitsAndRowsRoundIndependently) {
  // Two identical rows must not round identically (the row index is part of the counter),
  // and a draw is a pure function of (seed, stream, call, row, index).
  const std::int64_t cols = 64;
  std::vector<float> row = make_input(1, cols, 32);
  std::vector<float> x = row;
  x.insert(x.end(), row.begin(), row.end());
  const RandomContext ctx{7u, 0u, 0u};
  const QuantizedTensor a = run(x, 2, cols, QuantizerKind::sr, Rotation::none(), ctx);
  const QuantizedTensor b = run(x, 2, cols, QuantizerKind::sr, Rotation::none(), ctx);
  EXPECT_EQ(a.codes, b.codes);
  EXPECT_EQ(a.scales, b.scales);
  int differ = 0;
  for (std::int64_t c = 0; c < cols; ++c) differ += a.code(0, c) != a.code(1, c);
  // Each non-grid element rounds differently with probability 2p(1-p); over 64 Gaussian
  // elements the chance of no difference at all is astronomically small.
  EXPECT_GT(differ, 3);
  // Another call gives other bits.
  const QuantizedTensor c1 = run(x, 2, cols, QuantizerKind::sr, Rotation::none(), {7u, 0u, 1u});
  EXPECT_NE(a.codes, c1.codes);
  // Independence of the tensor's other rows: the first row of a 3-row tensor with the same t
  // (the maximum sits in row 0) rounds exactly as in the 2-row tensor.
  std::vector<float> x3 = x;
  for (std::int64_t c = 0; c < cols; ++c) x3.push_back(0.5f * row[c]);
  const QuantizedTensor a3 = run(x3, 3, cols, QuantizerKind::sr, Rotation::none(), ctx);
  ASSERT_EQ(a3.tensor_scale, a.tensor_scale);
  for (std::int64_t c = 0; c < cols; ++c) {
    EXPECT_EQ(a3.code(0, c), a.code(0, c));
    EXPECT_EQ(a3.code(1, c), a.code(1, c));
  }
}

TEST(SpecSr, UnbiasedPerElement) {
  // N draws with fresh bits (RandomContext.call = draw). The block scales are deterministic,
  // so each dequantized element is x_lo or x_hi = x_lo + D (D = grid step * s * t), and its
  // mean is x up to the coin bias (< 2^-17 D) and the FP32 evaluation of x/(s t) (< 1e-5 D).
  // Hoeffding: P(|mean_N - E| >= eps) <= 2 exp(-2 N eps^2 / D^2). With delta = 4e-9 per
  // element (1e-6 for all 256 together), eps = D sqrt(ln(2/delta) / (2N)) = 0.0494 D at
  // N = 4096. Systematic bias: the average over all n N terms of (x^ - x) sign(x) / D, each
  // in an interval of width 1, is within sqrt(ln(2/delta)/(2 n N)) = 0.0031 of its mean.
  const std::int64_t rows = 4, cols = 64, n = rows * cols;
  const int N = 4096;
  const std::vector<float> x = make_input(rows, cols, 33, 2.0);
  // Reference steps D from the double reference (t, s_g as in check_rtn_family).
  double amax = 0;
  for (float v : x) amax = std::max(amax, std::fabs(double(v)));
  const double V = 6.0 * 16.0 / 17.0, t = amax / (448.0 * V);
  std::vector<double> step(n);
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t g = 0; g < cols / 16; ++g) {
      double m = 0;
      for (int i = 0; i < 16; ++i) m = std::max(m, std::fabs(double(x[r * cols + g * 16 + i])));
      double s = e4m3_rne(m / V / t);
      if (s == 0) s = 1;
      for (int i = 0; i < 16; ++i) {
        const double a = std::fabs(x[r * cols + g * 16 + i]) / (s * t);
        const Bracket b = e2m1_bracket(a);
        step[r * cols + g * 16 + i] = (b.hi - b.lo) * s * t;
      }
    }
  std::vector<double> sum(n, 0.0);
  double signed_bias = 0;
  for (int draw = 0; draw < N; ++draw) {
    const QuantizedTensor q = run(x, rows, cols, QuantizerKind::sr, Rotation::none(), {99u, 1u, std::uint32_t(draw)});
    const std::vector<float> d = quartet::dequantize(q);
    for (std::int64_t i = 0; i < n; ++i) {
      sum[i] += d[i];
      if (step[i] > 0) signed_bias += (d[i] - x[i]) * (x[i] < 0 ? -1.0 : 1.0) / step[i];
    }
  }
  const double ln = std::log(2.0 / 4e-9);
  for (std::int64_t i = 0; i < n; ++i) {
    const double mean = sum[i] / N;
    if (step[i] == 0) {
      EXPECT_EQ(mean, x[i]);
      continue;
    }
    const double eps = step[i] * (std::sqrt(ln / (2.0 * N)) + 2e-5);
    EXPECT_NEAR(mean, x[i], eps) << "element " << i << " step " << step[i];
  }
  EXPECT_NEAR(signed_bias / (double(n) * N), 0.0, std::sqrt(ln / (2.0 * n * N)) + 2e-5);
}

// ---------------------------------------------------------------------------------------
// MS-EDEN

TEST(SpecMsEden, CanonicalG16MatchesReference) {
  for (std::uint32_t seed : {41u, 42u}) {
    const std::int64_t rows = 16, cols = 256;
    std::vector<float> x = make_input(rows, cols, seed, 6.0);
    for (int c = 0; c < 128; ++c) x[3 * cols + c] = 0.0f;  // an all-zero 128-block: rotated, all-zero groups
    const RandomContext ctx{seed, 2u, 7u};
    const Rotation rot = Rotation::random(128, ctx);
    const QuantizedTensor q = run(x, rows, cols, QuantizerKind::ms_eden_g16, rot, ctx);
    EXPECT_EQ(q.rotation_size, 128);
    const std::vector<float> y = ref_rotate(x, rows, cols, rot);
    Checker ck{.what = "ms_eden_g16 seed " + std::to_string(seed)};
    check_ms_eden_g16(ck, y, rows, cols, q, ctx);
    ck.finish();
  }
}

TEST(SpecMsEden, CanonicalG16WithNonDefaultClip) {
  // s = 6 (1/h) / clip; clip 1 gives s = 6 * 16/17.
  const std::int64_t rows = 8, cols = 128;
  const std::vector<float> x = make_input(rows, cols, 45, 4.0);
  QuantizerSpec spec = QuantizerSpec::defaults(QuantizerKind::ms_eden_g16);
  spec.clip = 1.0;
  const double s = 6.0 * (16.0 / 17.0);
  EXPECT_FLOAT_EQ(spec.val_max(), static_cast<float>(s));
  const RandomContext ctx{45u, 0u, 0u};
  const Rotation rot = Rotation::random(128, ctx);
  const QuantizedTensor q = quartet::quantize(quartet::ConstMatrixView(x.data(), rows, cols), spec, rot, ctx);
  Checker ck{.what = "ms_eden_g16 clip 1"};
  check_ms_eden_g16(ck, ref_rotate(x, rows, cols, rot), rows, cols, q, ctx, s);
  ck.finish();
}

TEST(SpecMsEden, ResearchG128MatchesReference) {
  for (std::uint32_t seed : {43u, 44u}) {
    const std::int64_t rows = 16, cols = 256;
    const std::vector<float> x = make_input(rows, cols, seed, 6.0);
    const RandomContext ctx{seed, 5u, 1u};
    const Rotation rot = Rotation::random(128, ctx);
    const QuantizedTensor q = run(x, rows, cols, QuantizerKind::ms_eden_g128, rot, ctx);
    const std::vector<float> y = ref_rotate(x, rows, cols, rot);
    Checker ck{.what = "ms_eden_g128 seed " + std::to_string(seed)};
    check_ms_eden_g128(ck, y, rows, cols, q, ctx);
    ck.finish();
  }
}

// E[e_g t] = c_g (canonical) and = sigma_g S t (research): with the rotation fixed, only the
// scale coin is random; the codes are deterministic. Hoeffding per group, e_g t in
// {lo t, hi t}: eps = D sqrt(ln(2/delta)/(2N)), delta = 1e-6 / groups; plus 1e-5 relative for
// the FP32-vs-double evaluation of c_g.
void scale_coin_unbiased(QuantizerKind kind) {
  const std::int64_t rows = 4, cols = 128, groups = 8;
  const int N = 2048;
  std::vector<float> x = make_input(rows, cols, 51, 3.0);
  // Row 3 scaled by 2^-16: its c_g / t fall among the E4M3 subnormals (< 2^-6), where SR must
  // stay unbiased too (numerics.md §1).
  for (std::int64_t c = 0; c < cols; ++c) x[3 * cols + c] *= std::ldexp(1.0f, -16);
  const Rotation rot = Rotation::random(128, {51u, 0u, 0u});
  const std::vector<float> y = ref_rotate(x, rows, cols, rot);
  std::vector<double> expected;
  std::vector<double> sum(rows * groups, 0.0), lo(rows * groups), hi(rows * groups);
  QuantizedTensor first;
  for (int draw = 0; draw < N; ++draw) {
    const RandomContext ctx{8u, 1u, std::uint32_t(draw)};
    const QuantizedTensor q = run(x, rows, cols, kind, rot, ctx);
    if (draw == 0) {
      Checker ck{.what = std::string(quartet::quantizer_name(kind)) + " draw 0"};
      expected = kind == QuantizerKind::ms_eden_g16 ? check_ms_eden_g16(ck, y, rows, cols, q, ctx)
                                                    : check_ms_eden_g128(ck, y, rows, cols, q, ctx);
      ck.finish();
      ASSERT_EQ(expected.size(), sum.size());
      first = q;
      for (std::size_t i = 0; i < expected.size(); ++i) {
        const double ratio = expected[i] / q.tensor_scale;  // in units of t
        const Bracket b = e4m3_bracket(ratio);
        lo[i] = b.lo * q.tensor_scale;
        hi[i] = b.hi * q.tensor_scale;
      }
    } else {
      ASSERT_EQ(q.codes, first.codes) << "codes must not depend on the scale coin";
      ASSERT_EQ(q.tensor_scale, first.tensor_scale);
    }
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t g = 0; g < groups; ++g) sum[r * groups + g] += double(q.scale_value(r, g)) * q.tensor_scale;
  }
  const double ln = std::log(2.0 / (1e-6 / (rows * groups)));
  int stochastic = 0, subnormal = 0;
  for (std::size_t i = 0; i < sum.size(); ++i) {
    const double mean = sum[i] / N, D = hi[i] - lo[i];
    EXPECT_NEAR(mean, expected[i], D * std::sqrt(ln / (2.0 * N)) + 1e-5 * expected[i]) << "group " << i;
    stochastic += D > 0;
    subnormal += D > 0 && hi[i] <= 0.015625 * first.tensor_scale;
  }
  EXPECT_GT(stochastic, int(sum.size()) / 2);
  if (kind == QuantizerKind::ms_eden_g16) {
    EXPECT_GE(subnormal, 4) << "the subnormal range was not exercised";
  }
}

TEST(SpecMsEden, G16ScaleCoinIsUnbiased) { scale_coin_unbiased(QuantizerKind::ms_eden_g16); }
TEST(SpecMsEden, G128ScaleCoinIsUnbiased) { scale_coin_unbiased(QuantizerKind::ms_eden_g128); }

// Averaging B draws with fresh rotation signs (numerics.md §8): for an unbiased quantizer with
// independent draws, E||mean_B - x||^2 = E1 / B exactly, E1 = E||x^ - x||^2. We measure
// rho_B = B ||mean_B - x||^2 / mean_b ||x^_b - x||^2, whose expectation is 1. It is a sum over
// 2048 nearly independent squared errors, relative sd ~ sqrt(2/2048) = 3.1% (an independent
// double-precision model of these quantizers gave sd 2.9% over 36 runs, and rho_1024 of 0.97
// to 1.07 for MS-EDEN g16/g128 and SR, whose finite-dimension bias is still invisible at
// B = 1024). Tolerance |rho - 1| <= 0.25 is ~8 sd. A biased quantizer has rho_B = 1 + B bias^2/E1:
// RTN (bias^2 ~ 2.3e-3 E1 in the model) gives rho_1024 ~ 3.3, which the control below checks,
// so the test can tell the difference. This is the slowest test (~4 x 1024 quantizations of
// 16 x 128).
std::vector<double> averaging_rho(QuantizerKind kind, const std::vector<int>& checkpoints) {
  const std::int64_t rows = 16, cols = 128;
  const std::vector<float> x = make_input(rows, cols, 61, 0.0);
  double xx = 0;
  for (float v : x) xx += double(v) * v;
  std::vector<double> acc(x.size(), 0.0);
  double e1 = 0;
  std::vector<double> rho;
  std::size_t next = 0;
  for (int b = 1; next < checkpoints.size(); ++b) {
    const RandomContext ctx{2025u, 9u, std::uint32_t(b)};
    const Rotation rot = Rotation::random(128, ctx);
    const QuantizedTensor q = run(x, rows, cols, kind, rot, ctx);
    const std::vector<float> u = quartet::dequantize_unrotated(q, rot);
    double e = 0;
    for (std::size_t i = 0; i < x.size(); ++i) {
      e += (double(u[i]) - x[i]) * (double(u[i]) - x[i]);
      acc[i] += u[i];
    }
    e1 += e / xx;
    if (b == checkpoints[next]) {
      double em = 0;
      for (std::size_t i = 0; i < x.size(); ++i) em += (acc[i] / b - x[i]) * (acc[i] / b - x[i]);
      rho.push_back(em / xx * b / (e1 / b));
      ++next;
    }
  }
  return rho;
}

TEST(SpecMsEden, ErrorOfTheMeanFallsLikeOneOverB) {
  const std::vector<int> checkpoints = {16, 256, 1024};
  for (QuantizerKind kind : {QuantizerKind::ms_eden_g16, QuantizerKind::ms_eden_g128, QuantizerKind::sr}) {
    const std::vector<double> rho = averaging_rho(kind, checkpoints);
    for (std::size_t i = 0; i < rho.size(); ++i)
      EXPECT_NEAR(rho[i], 1.0, 0.25) << quartet::quantizer_name(kind) << " B = " << checkpoints[i];
  }
  // Control: RTN under the same protocol is visibly biased at B = 1024.
  const std::vector<double> rtn = averaging_rho(QuantizerKind::rtn, {1024});
  EXPECT_GT(rtn[0], 2.0) << "the protocol should detect RTN's bias";
}

// ---------------------------------------------------------------------------------------
// MXFP4

TEST(SpecMxfp4, QuestHandWorkedScales) {
  // After the fixed Hadamard-32, x = a e_1 becomes y_i = a H[i][1] = +-a/sqrt(32): mean 0 and
  // population std sigma = a/sqrt(32). Group 0: sigma = 2.02, 0.48708 sigma = 0.9839 -> X = 1/2
  // (a clip of 0.5 would give 1.01 -> X = 1). Group 1: sigma = 2.06 -> 1.0034 -> X = 1.
  // Group 2: all zero, sigma = 0 -> X = 2^floor(log2(1e-8)) = 2^-27.
  // Group 3: x = 3 sqrt(32) e_0 + 1.02 sqrt(32) e_1 -> y_i = 3 +- 1.02: mean 3, population std
  // 1.02 (mean-subtracted!) -> 0.4968 -> X = 1/4; every |y/X| >= 7.9 clips to 6: untrusted.
  std::vector<float> x(128, 0.0f);
  x[1] = static_cast<float>(2.02 * std::sqrt(32.0));
  x[33] = static_cast<float>(2.06 * std::sqrt(32.0));
  x[96] = static_cast<float>(3.0 * std::sqrt(32.0));
  x[97] = static_cast<float>(1.02 * std::sqrt(32.0));
  const QuantizedTensor q = run(x, 1, 128, QuantizerKind::mxfp4_quest, Rotation::hadamard(32));
  EXPECT_EQ(q.scale_value(0, 0), 0.5f);
  EXPECT_EQ(q.scale_byte(0, 0), 126);
  EXPECT_EQ(q.scale_value(0, 1), 1.0f);
  EXPECT_EQ(q.scale_byte(0, 1), 127);
  EXPECT_EQ(q.scale_value(0, 2), std::ldexp(1.0f, -27));
  EXPECT_EQ(q.scale_byte(0, 2), 100);
  EXPECT_EQ(q.scale_value(0, 3), 0.25f);
  EXPECT_EQ(q.scale_byte(0, 3), 125);
  const std::vector<float> d = quartet::dequantize(q);
  for (int i = 0; i < 32; ++i) {
    const float sign = (i & 1) ? -1.0f : 1.0f;  // (-1)^popcount(i & 1)
    EXPECT_EQ(d[i], sign * 2.0f) << i;           // 4.04 -> 4, times 1/2
    EXPECT_EQ(d[32 + i], sign * 2.0f) << i;      // 2.06 -> 2
    EXPECT_EQ(d[64 + i], 0.0f) << i;
    EXPECT_TRUE(q.trusted(0, i));
    EXPECT_TRUE(q.trusted(0, 32 + i));
    EXPECT_EQ(d[96 + i], 1.5f) << i;  // 6 * 1/4
    EXPECT_FALSE(q.trusted(0, 96 + i)) << i;
  }
}

TEST(SpecMxfp4, QuestMatchesReference) {
  // 32 x 4 = 128 groups: a few percent of groups sit where the clip constant decides X.
  const std::int64_t rows = 32, cols = 128;
  std::vector<float> x = make_input(rows, cols, 71, 4.0);
  x[2 * cols + 5] = 40.0f;  // an outlier that clips: trust bit 0
  const Rotation rot = Rotation::hadamard(32);
  const QuantizedTensor q = run(x, rows, cols, QuantizerKind::mxfp4_quest, rot);
  const std::vector<float> y = ref_rotate(x, rows, cols, rot);
  Checker ck{.what = "quest"};
  check_quest(ck, y, rows, cols, q);
  ck.finish();
  int untrusted = 0;
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c) untrusted += !q.trusted(r, c);
  EXPECT_GT(untrusted, 0) << "the clip at 0.48708 sigma must clip some Gaussian tails";
}

TEST(SpecMxfp4, BackwardRtnMatchesReference) {
  const std::int64_t rows = 8, cols = 96;
  std::vector<float> x = make_input(rows, cols, 72, 12.0);
  for (int c = 32; c < 64; ++c) x[cols + c] = 0.0f;
  const QuantizedTensor q = run(x, rows, cols, QuantizerKind::mxfp4_rtn);
  Checker ck{.what = "mxfp4_rtn"};
  check_mx_backward(ck, x, rows, cols, q, ElementRounding::rne, {});
  ck.finish();
  // Nothing clips: |3 x / X| < 6 since m_g / X < 2, so the error is at most half the largest
  // E2M1 step (2) in units of X / 3.
  const std::vector<float> d = quartet::dequantize(q);
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c)
      EXPECT_LE(std::fabs(double(d[r * cols + c]) - x[r * cols + c]), 1.0 * q.scale_value(r, c / 32) / 3.0 * (1 + 1e-6))
          << at(r, c);
}

TEST(SpecMxfp4, BackwardSrMatchesReferenceWithDocumentedCoins) {
  const std::int64_t rows = 8, cols = 64;
  const std::vector<float> x = make_input(rows, cols, 73, 6.0);
  const RandomContext ctx{1234u, 6u, 3u};
  const QuantizedTensor q = run(x, rows, cols, QuantizerKind::mxfp4_sr, Rotation::none(), ctx);
  Checker ck{.what = "mxfp4_sr"};
  check_mx_backward(ck, x, rows, cols, q, ElementRounding::sr, ctx);
  ck.finish();
}

TEST(SpecMxfp4, BackwardSrIsUnbiasedPerElement) {
  // As SpecSr.UnbiasedPerElement: x^ in {lo, lo + D}, D = step * X / 3 (t = FP32(1/3), whose
  // relative error 3e-8 is covered by the 1e-6 D slack); Hoeffding with delta = 1e-6 / 128.
  const std::int64_t rows = 2, cols = 64, n = rows * cols;
  const int N = 4096;
  const std::vector<float> x = make_input(rows, cols, 74, 2.0);
  std::vector<double> step(n);
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t g = 0; g < 2; ++g) {
      double m = 0;
      for (int i = 0; i < 32; ++i) m = std::max(m, std::fabs(double(x[r * cols + g * 32 + i])));
      const double X = floor_pow2(m);
      for (int i = 0; i < 32; ++i) {
        const Bracket b = e2m1_bracket(3.0 * std::fabs(x[r * cols + g * 32 + i]) / X);
        step[r * cols + g * 32 + i] = (b.hi - b.lo) * X / 3.0;
      }
    }
  std::vector<double> sum(n, 0.0);
  for (int draw = 0; draw < N; ++draw) {
    const std::vector<float> d =
        quartet::dequantize(run(x, rows, cols, QuantizerKind::mxfp4_sr, Rotation::none(), {5u, 0u, std::uint32_t(draw)}));
    for (std::int64_t i = 0; i < n; ++i) sum[i] += d[i];
  }
  const double ln = std::log(2.0 / (1e-6 / n));
  for (std::int64_t i = 0; i < n; ++i)
    EXPECT_NEAR(sum[i] / N, x[i], step[i] * (std::sqrt(ln / (2.0 * N)) + 1e-6) + std::fabs(x[i]) * 1e-6) << i;
}

}  // namespace

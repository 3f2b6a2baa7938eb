// The stochastic-rounding coin (numerics.md §3): each decision uses 16 random bits k and
// compares against u = (k + 0.5) / 65536, which is exact in FP32. A decision "rounds up" iff
// u < p, where p is the exact fractional position between the two grid neighbours. The
// resulting probability differs from p by less than 2^-17.
#pragma once

#include <cstdint>

#include "quartet/numerics/host_device.h"

namespace quartet {

QUARTET_HD float sr_threshold(std::uint16_t k) {
  return fmul(fadd(static_cast<float>(k), 0.5f), 1.0f / 65536.0f);
}

}  // namespace quartet

// Division of 32-bit unsigned integers by a divisor fixed for a whole kernel, as one high
// multiply, one add and one shift (Granlund and Montgomery's round-up method with a 33-bit
// multiplier 2^32 + m): the kernels' index arithmetic divides by the groups per row on every
// iteration, and a GPU integer division is a long instruction sequence.
#pragma once

#include <cstdint>
#include <stdexcept>

#include "quartet/numerics/host_device.h"

namespace quartet {

struct DivideU32 {
  std::uint32_t multiplier = 0;  // m: the low 32 bits of the multiplier 2^32 + m
  std::uint32_t shift = 0;       // l = ceil(log2 d)

  // d >= 1.
  static DivideU32 by(std::uint32_t d) {
    if (d == 0) throw std::invalid_argument("DivideU32: division by zero");
    DivideU32 r;
    while ((std::uint64_t{1} << r.shift) < d) ++r.shift;
    // m = floor(2^32 (2^l - d) / d) + 1 < 2^32
    r.multiplier = static_cast<std::uint32_t>(((std::uint64_t{1} << 32) * ((std::uint64_t{1} << r.shift) - d)) / d + 1);
    return r;
  }

  // floor(n / d) for every n < 2^32.
  QUARTET_HD std::uint32_t divide(std::uint32_t n) const {
#if defined(__CUDA_ARCH__)
    const std::uint64_t high = __umulhi(n, multiplier);
#else
    const std::uint64_t high = (static_cast<std::uint64_t>(n) * multiplier) >> 32;
#endif
    return static_cast<std::uint32_t>((high + n) >> shift);
  }
};

}  // namespace quartet

// BF16 storage: the GPU keeps activations in BF16, so the CPU rounds to BF16 at the same
// places to feed the quantizers identical inputs.
#pragma once

#include <cstdint>

#include "quartet/numerics/host_device.h"

namespace quartet {

// Round to nearest even; NaN stays a (quiet) NaN, overflow goes to infinity as in hardware.
QUARTET_HD std::uint16_t bf16_bits(float v) {
  const std::uint32_t b = float_bits(v);
  if ((b & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<std::uint16_t>((b >> 16) | 0x0040u);
  const std::uint32_t rounding = 0x7FFFu + ((b >> 16) & 1u);
  return static_cast<std::uint16_t>((b + rounding) >> 16);
}

QUARTET_HD float bf16_to_float(std::uint16_t h) { return bits_float(static_cast<std::uint32_t>(h) << 16); }

QUARTET_HD float round_to_bf16(float v) { return bf16_to_float(bf16_bits(v)); }

}  // namespace quartet

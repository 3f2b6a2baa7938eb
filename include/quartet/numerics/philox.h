// Philox4x32-10 (Salmon et al. 2011), the counter-based generator cuRAND also implements.
//
// Every random draw in Quartet is a pure function of (seed, stream, call, row, index): no
// hidden state, identical on the CPU and the GPU, independent of thread layout. The counter
// and the bit assignment are written down here once and used by both backends:
//
//   key     = (seed bits 0..31, seed bits 32..63)
//   counter = (x: block, y: row, z: call, w: stream)
//
// Stochastic-rounding decisions: decision d of a row (an element index for per-element SR,
// a group index for MS-EDEN's per-group scale rounding) uses block d / 8 and, inside that
// block's four 32-bit output words (x, y, z, w), word (d % 8) / 2, its low 16 bits when d is
// even and its high 16 bits when d is odd. One Philox call thus serves eight decisions.
//
// Rotation signs (randomized Hadamard transform) use row kRotationSignRow, block 0: sign j
// (j < 128) is bit j % 32 of word j / 32; a set bit means -1. The row index of a real tensor
// can never reach this value.
#pragma once

#include <cstdint>

#include "quartet/numerics/host_device.h"

namespace quartet {

struct PhiloxWords {
  std::uint32_t x = 0, y = 0, z = 0, w = 0;
  QUARTET_HD std::uint32_t operator[](unsigned i) const {
    return i == 0 ? x : (i == 1 ? y : (i == 2 ? z : w));
  }
};

inline constexpr std::uint32_t kPhiloxM0 = 0xD2511F53u;
inline constexpr std::uint32_t kPhiloxM1 = 0xCD9E8D57u;
inline constexpr std::uint32_t kPhiloxW0 = 0x9E3779B9u;
inline constexpr std::uint32_t kPhiloxW1 = 0xBB67AE85u;

QUARTET_HD PhiloxWords philox4x32_round(PhiloxWords c, std::uint32_t k0, std::uint32_t k1) {
  const std::uint64_t p0 = static_cast<std::uint64_t>(kPhiloxM0) * c.x;
  const std::uint64_t p1 = static_cast<std::uint64_t>(kPhiloxM1) * c.z;
  const auto hi0 = static_cast<std::uint32_t>(p0 >> 32), lo0 = static_cast<std::uint32_t>(p0);
  const auto hi1 = static_cast<std::uint32_t>(p1 >> 32), lo1 = static_cast<std::uint32_t>(p1);
  return PhiloxWords{hi1 ^ c.y ^ k0, lo1, hi0 ^ c.w ^ k1, lo0};
}

QUARTET_HD PhiloxWords philox4x32_10(PhiloxWords counter, std::uint32_t k0, std::uint32_t k1) {
  for (int round = 0; round < 9; ++round) {
    counter = philox4x32_round(counter, k0, k1);
    k0 += kPhiloxW0;
    k1 += kPhiloxW1;
  }
  return philox4x32_round(counter, k0, k1);
}

// Where a quantizer's random bits come from. `stream` separates independent consumers (each
// operand of each layer); `call` counts invocations (steps, draws).
struct RandomContext {
  std::uint64_t seed = 0;
  std::uint32_t stream = 0;
  std::uint32_t call = 0;
};

inline constexpr std::uint32_t kRotationSignRow = 0xFFFFFFFFu;

QUARTET_HD PhiloxWords philox_block(const RandomContext& ctx, std::uint32_t row, std::uint32_t block) {
  return philox4x32_10(PhiloxWords{block, row, ctx.call, ctx.stream},
                       static_cast<std::uint32_t>(ctx.seed),
                       static_cast<std::uint32_t>(ctx.seed >> 32));
}

// The 16 bits of decision i (0..7) inside one Philox block.
QUARTET_HD std::uint16_t decision_bits(const PhiloxWords& words, unsigned i) {
  return static_cast<std::uint16_t>(words[(i & 7u) >> 1] >> (16u * (i & 1u)));
}

// The 16-bit words of decisions first .. first+count-1 of a row, one Philox call per 8.
QUARTET_HD void random_decision_range(const RandomContext& ctx, std::uint32_t row, std::uint32_t first, int count,
                                      std::uint16_t* out) {
  PhiloxWords words;
  for (int i = 0; i < count; ++i) {
    const std::uint32_t d = first + static_cast<std::uint32_t>(i);
    if (i == 0 || d % 8u == 0) words = philox_block(ctx, row, d / 8u);
    out[i] = decision_bits(words, d % 8u);
  }
}

// The 16 bits of decision d of a row (one Philox call; loops should reuse blocks instead).
QUARTET_HD std::uint16_t random_decision_bits(const RandomContext& ctx, std::uint32_t row,
                                              std::uint32_t decision) {
  return decision_bits(philox_block(ctx, row, decision / 8u), decision % 8u);
}

}  // namespace quartet

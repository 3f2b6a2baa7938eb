// Scalar building blocks shared verbatim by the CPU reference and the CUDA kernels.
//
// Every quantizer formula is written once, in headers under include/quartet/numerics/, with
// QUARTET_HD functions. The CPU backend calls them in loops; a CUDA kernel calls the same
// functions per thread. That, plus the rules below, is what makes codes and scales agree bit
// for bit between the two backends (numerics.md, "Bitwise agreement").
//
// Rules for code in these headers:
//  * Only IEEE-754 binary32 operations with round-to-nearest-even, one at a time. Products and
//    sums go through fmul/fadd/fsub/fdiv/frcp below: on the device they are the _rn
//    intrinsics, which nvcc never contracts into an FMA; on the host the project compiles with
//    -ffp-contract=off (see cmake/CompilerOptions.cmake).
//  * No library transcendentals (log2f, exp2f): exponents are read from the bits.
//  * Sums over a group use the pairwise tree of tree_sum() (group_math.h), never a loop whose
//    order a compiler or a thread layout could change.
#pragma once

#include <cstdint>
#if !defined(__CUDA_ARCH__)
#include <bit>
#endif

#if defined(__CUDACC__)
#define QUARTET_HD __host__ __device__ __forceinline__
#else
#define QUARTET_HD inline
#endif

namespace quartet {

QUARTET_HD std::uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  return std::bit_cast<std::uint32_t>(f);
#endif
}

QUARTET_HD float bits_float(std::uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  return std::bit_cast<float>(u);
#endif
}

QUARTET_HD float fmul(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

QUARTET_HD float fadd(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

QUARTET_HD float fsub(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}

// b * c + a where the caller guarantees that the product b * c is exact in FP32 (e.g. an E2M1
// magnitude times an E4M3 scale, or a scaling by a power of two): then the FMA rounds once,
// exactly as fadd(fmul(b, c), a) does, so both backends agree bit for bit while the device
// issues one instruction instead of two. (The host keeps the two operations: the same bits.)
QUARTET_HD float fadd_exact_product(float b, float c, float a) {
#if defined(__CUDA_ARCH__)
  return __fmaf_rn(b, c, a);
#else
  return fadd(fmul(b, c), a);
#endif
}

// Correctly rounded division and reciprocal (the device default '/' is not guaranteed to be
// under every flag set; the intrinsics are).
QUARTET_HD float fdiv(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}

QUARTET_HD float frcp(float a) {
#if defined(__CUDA_ARCH__)
  return __frcp_rn(a);
#else
  return 1.0f / a;
#endif
}

QUARTET_HD float fsqrt(float a) {
#if defined(__CUDA_ARCH__)
  return __fsqrt_rn(a);
#else
  return __builtin_sqrtf(a);  // IEEE correctly rounded, like __fsqrt_rn
#endif
}

// |a| by clearing the sign bit; on the device fabsf, which folds into the consuming instruction
// as its |.| operand modifier instead of costing a LOP3. The two agree for every finite input
// (PTX leaves a NaN's payload unspecified; quantizer inputs are validated finite) under the
// project's flags (no -ftz, which would flush subnormals here).
QUARTET_HD float fabs_bits(float a) {
#if defined(__CUDA_ARCH__)
  return fabsf(a);
#else
  return bits_float(float_bits(a) & 0x7FFFFFFFu);
#endif
}

// max that never lets a NaN win silently is not needed here: inputs are validated finite
// before any quantizer runs.
QUARTET_HD float fmax2(float a, float b) { return a > b ? a : b; }

// max(a, b) for non-negative, non-NaN a and b: one FMNMX on the device (fmax2's compare and
// select there are two instructions); the same number either way.
QUARTET_HD float fmax_nonneg(float a, float b) {
#if defined(__CUDA_ARCH__)
  return fmaxf(a, b);
#else
  return fmax2(a, b);
#endif
}

// 2^e as a float for e in [-126, 127] (normal range), built from the bits.
QUARTET_HD float pow2_normal(int e) { return bits_float(static_cast<std::uint32_t>(e + 127) << 23); }

// floor(log2(a)) for a positive normal float, read from the exponent field.
QUARTET_HD int floor_log2_normal(float a) {
  return static_cast<int>((float_bits(a) >> 23) & 0xFFu) - 127;
}

// Smallest positive normal float, 2^-126.
inline constexpr float kFloatMinNormal = 1.17549435e-38f;

}  // namespace quartet

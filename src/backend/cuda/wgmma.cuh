// Hopper warpgroup matrix products (wgmma, sm_90a only): the m64n128k16 and m64n64k16 BF16
// products with FP32 accumulation that the flash-attention and FP4-operand kernels issue,
// shared-memory matrix descriptors for 128-byte-swizzled tiles, and the fences their asynchrony
// needs. The accumulator of an m64nN product is float[N / 8][4] per thread: n-tile j holds
// (row g, cols 8j + 2c, 2c + 1) and (row g + 8, the same cols) of its warp's 16 rows, the layout
// of mma.sync's C fragments (tensor_core.cuh).
#pragma once

#include <cstdint>

namespace quartet::cuda {

// True where this compilation can issue wgmma (sm_90a); elsewhere the callers compile to a trap
// and the host never launches them (attention.cu checks the device).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ == 900 && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define QUARTET_HAS_WGMMA 1
#else
#define QUARTET_HAS_WGMMA 0
#endif

// The 64 FP32 accumulator registers of an m64n128 product as inline-asm operands %0..%63.
#define QUARTET_WGMMA_M64N128_ACCUMULATOR(d) \
  "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), \
  "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), \
  "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), \
  "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), \
  "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), \
  "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), \
  "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), \
  "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3]), \
  "+f"(d[8][0]), "+f"(d[8][1]), "+f"(d[8][2]), "+f"(d[8][3]), \
  "+f"(d[9][0]), "+f"(d[9][1]), "+f"(d[9][2]), "+f"(d[9][3]), \
  "+f"(d[10][0]), "+f"(d[10][1]), "+f"(d[10][2]), "+f"(d[10][3]), \
  "+f"(d[11][0]), "+f"(d[11][1]), "+f"(d[11][2]), "+f"(d[11][3]), \
  "+f"(d[12][0]), "+f"(d[12][1]), "+f"(d[12][2]), "+f"(d[12][3]), \
  "+f"(d[13][0]), "+f"(d[13][1]), "+f"(d[13][2]), "+f"(d[13][3]), \
  "+f"(d[14][0]), "+f"(d[14][1]), "+f"(d[14][2]), "+f"(d[14][3]), \
  "+f"(d[15][0]), "+f"(d[15][1]), "+f"(d[15][2]), "+f"(d[15][3])

// The 32 accumulator registers of an m64n64 product, n-tiles o .. o + 7 of an m64n128
// accumulator, as inline-asm operands %0..%31.
#define QUARTET_WGMMA_M64N64_ACCUMULATOR(d, o) \
  "+f"(d[(o) + 0][0]), "+f"(d[(o) + 0][1]), "+f"(d[(o) + 0][2]), "+f"(d[(o) + 0][3]), \
  "+f"(d[(o) + 1][0]), "+f"(d[(o) + 1][1]), "+f"(d[(o) + 1][2]), "+f"(d[(o) + 1][3]), \
  "+f"(d[(o) + 2][0]), "+f"(d[(o) + 2][1]), "+f"(d[(o) + 2][2]), "+f"(d[(o) + 2][3]), \
  "+f"(d[(o) + 3][0]), "+f"(d[(o) + 3][1]), "+f"(d[(o) + 3][2]), "+f"(d[(o) + 3][3]), \
  "+f"(d[(o) + 4][0]), "+f"(d[(o) + 4][1]), "+f"(d[(o) + 4][2]), "+f"(d[(o) + 4][3]), \
  "+f"(d[(o) + 5][0]), "+f"(d[(o) + 5][1]), "+f"(d[(o) + 5][2]), "+f"(d[(o) + 5][3]), \
  "+f"(d[(o) + 6][0]), "+f"(d[(o) + 6][1]), "+f"(d[(o) + 6][2]), "+f"(d[(o) + 6][3]), \
  "+f"(d[(o) + 7][0]), "+f"(d[(o) + 7][1]), "+f"(d[(o) + 7][2]), "+f"(d[(o) + 7][3])

// A descriptor of a shared-memory operand in the 128-byte swizzle mode: `address` its first
// element (the tile's base 1024-byte aligned), `leading` and `stride` the byte offsets of the
// PTX ISA's canonical layouts (K-major: stride = between groups of 8 rows, leading unused;
// MN-major: leading = between 64-element column chunks, stride = between groups of 8 k-rows).
__device__ __forceinline__ std::uint64_t swizzle128_descriptor(std::uint32_t address, std::uint32_t leading,
                                                               std::uint32_t stride) {
  return static_cast<std::uint64_t>((address & 0x3FFFF) >> 4) | (static_cast<std::uint64_t>(leading >> 4) << 16) |
         (static_cast<std::uint64_t>(stride >> 4) << 32) | (1ull << 62);
}

__device__ __forceinline__ void wgmma_fence() {
#if QUARTET_HAS_WGMMA
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void wgmma_commit() {
#if QUARTET_HAS_WGMMA
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void wgmma_wait_all() {
#if QUARTET_HAS_WGMMA
  asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
#endif
}
// Waits until at most `Pending` committed groups of this warpgroup's products are unfinished.
template <int Pending>
__device__ __forceinline__ void wgmma_wait() {
#if QUARTET_HAS_WGMMA
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(Pending) : "memory");
#endif
}
// Writes by the generic proxy (cp.async, st.shared) made visible to wgmma's reads.
__device__ __forceinline__ void fence_async_shared() {
#if QUARTET_HAS_WGMMA
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}
// Keeps the compiler from moving reads or writes of an accumulator across a wgmma fence or wait.
template <int NTiles>
__device__ __forceinline__ void fence_accumulator(float (&d)[NTiles][4]) {
#pragma unroll
  for (int j = 0; j < NTiles; ++j) {
#pragma unroll
    for (int e = 0; e < 4; ++e) asm volatile("" : "+f"(d[j][e])::"memory");
  }
}

// d (+)= A B, A [64 x 16] and B [16 x 128] both K-major in shared memory; d is overwritten when
// `accumulate` is 0.
__device__ __forceinline__ void wgmma_m64n128k16_ss(float (&d)[16][4], std::uint64_t a, std::uint64_t b, int accumulate) {
#if QUARTET_HAS_WGMMA
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, 0, 0;\n}\n"
      : QUARTET_WGMMA_M64N128_ACCUMULATOR(d)
      : "l"(a), "l"(b), "r"(accumulate));
#else
  (void)d, (void)a, (void)b, (void)accumulate;
  __trap();
#endif
}

// d (+)= A B for an m64n64 accumulator of its own (float[8][4]), A [64 x 16] and B [16 x 64] both
// K-major in shared memory; d is overwritten when `accumulate` is 0.
__device__ __forceinline__ void wgmma_m64n64k16_ss(float (&d)[8][4], std::uint64_t a, std::uint64_t b, int accumulate) {
#if QUARTET_HAS_WGMMA
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, 0, 0;\n}\n"
      : QUARTET_WGMMA_M64N64_ACCUMULATOR(d, 0)
      : "l"(a), "l"(b), "r"(accumulate));
#else
  (void)d, (void)a, (void)b, (void)accumulate;
  __trap();
#endif
}

// d += A B, A [64 x 16] from registers (each warp's 16 rows as an mma.sync A fragment) and B
// [16 x 128] in shared memory: MN-major by default (rows of B contiguous: the transposed read),
// K-major with BKMajor (columns of B contiguous, as a TN GEMM's second operand lies).
template <bool BKMajor = false>
__device__ __forceinline__ void wgmma_m64n128k16_rs(float (&d)[16][4], const std::uint32_t (&a)[4], std::uint64_t b) {
#if QUARTET_HAS_WGMMA
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, {%64, %65, %66, %67}, %68, p, 1, 1, %70;\n}\n"
      : QUARTET_WGMMA_M64N128_ACCUMULATOR(d)
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1), "n"(BKMajor ? 0 : 1));
#else
  (void)d, (void)a, (void)b;
  __trap();
#endif
}

// d's n-tiles Offset .. Offset + 7 (64 columns) += A B, B [16 x 64] in shared memory: the whole
// of an m64n64 accumulator (float[8][4]), or half of an m64n128 one. Two of these on one A
// fragment keep the fragment's registers in use across a pair of products, where one m64n128
// product each (the 128 x 128 FP4-operand tile) made ptxas serialize the products (warning C7513).
template <int Offset, bool BKMajor = false, int NTiles>
__device__ __forceinline__ void wgmma_m64n64k16_rs(float (&d)[NTiles][4], const std::uint32_t (&a)[4], std::uint64_t b) {
  static_assert(Offset % 8 == 0 && Offset + 8 <= NTiles, "64 columns of the accumulator");
#if QUARTET_HAS_WGMMA
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, p, 1, 1, %38;\n}\n"
      : QUARTET_WGMMA_M64N64_ACCUMULATOR(d, Offset)
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1), "n"(BKMajor ? 0 : 1));
#else
  (void)d, (void)a, (void)b;
  __trap();
#endif
}

}  // namespace quartet::cuda

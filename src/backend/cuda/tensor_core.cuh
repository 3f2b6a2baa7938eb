// Warp-level tensor-core building blocks (sm_80 and later, so Hopper and Blackwell too):
// asynchronous global->shared copies, ldmatrix, and the m16n8k16 BF16 MMA with FP32
// accumulation. Fragment layouts follow the PTX ISA ("Matrix fragments for mma.m16n8k16"):
// with g = lane / 4 and c = lane % 4,
//   A (16x16, row-major): a0 = (g, 2c..2c+1), a1 = (g+8, 2c..), a2 = (g, 2c+8..), a3 = (g+8, 2c+8..)
//   B (16x8, k x n):      b0 = (k 2c..2c+1, n g), b1 = (k 2c+8.., n g)
//   C (16x8, FP32):       c0, c1 = (g, 2c..2c+1), c2, c3 = (g+8, 2c..2c+1)
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

namespace quartet::cuda {

__device__ __forceinline__ std::uint32_t shared_address(const void* p) {
  return static_cast<std::uint32_t>(__cvta_generic_to_shared(p));
}

// The first 1024-byte-aligned shared address at or after p: where a tile in the 128-byte swizzle
// must start (wgmma's descriptors and TMA apply the XOR from address bits 7-9).
__device__ __forceinline__ std::uint32_t shared_address_aligned_1024(const void* p) {
  return (shared_address(p) + 1023u) & ~1023u;
}

// 16 bytes global -> shared, bypassing L1; zero-filled when !valid (src is not read then).
__device__ __forceinline__ void copy_async_16(std::uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0));
}
// 4 bytes global -> shared (through L1: cp.async copies of under 16 bytes must), zero-filled when !valid.
__device__ __forceinline__ void copy_async_4(std::uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 4 : 0));
}
__device__ __forceinline__ void copy_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int Pending>
__device__ __forceinline__ void copy_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(Pending));
}

// The step of a double-buffered cp.async loop before iteration i of n: queues iteration i + 1's
// copies (load(i + 1, buffer (i + 1) & 1)) and waits until this thread's copies of iteration i
// have landed (the caller's barrier then makes them every thread's).
template <class Load>
__device__ __forceinline__ void prefetch_next_and_wait(int i, int n, Load&& load) {
  if (i + 1 < n) {
    load(i + 1, (i + 1) & 1);
    copy_async_commit();
    copy_async_wait<1>();
  } else {
    copy_async_wait<0>();
  }
}

// Four 8x8 b16 matrices; lane l gives the address of row l % 8 of matrix l / 8.
__device__ __forceinline__ void load_matrix_x4(std::uint32_t (&r)[4], std::uint32_t address) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
}
__device__ __forceinline__ void load_matrix_x4_transposed(std::uint32_t (&r)[4], std::uint32_t address) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
}

// d += a b (m16n8k16, BF16 inputs, FP32 accumulation).
__device__ __forceinline__ void mma_bf16(float (&d)[4], const std::uint32_t (&a)[4], std::uint32_t b0, std::uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two floats as a BF16 pair (round to nearest even), lo in the low half.
__device__ __forceinline__ std::uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const std::uint32_t*>(&v);
}

// A shared-memory tile of Rows x Cols BF16 values (Cols a multiple of 64), row-major in 16-byte
// chunks whose index is XOR-swizzled with the row's low three bits: the eight rows an ldmatrix
// reads at one chunk column fall in eight different bank groups, and cp.async writes whole
// chunks, so neither conflicts.
template <int Rows, int Cols>
struct SwizzledTile {
  static_assert(Cols % 64 == 0, "a row must hold at least eight 16-byte chunks");
  static constexpr int kChunks = Cols / 8;  // 16-byte chunks per row
  static constexpr int kBytes = Rows * Cols * 2;

  __device__ static std::uint32_t offset(int row, int chunk) {
    return static_cast<std::uint32_t>((row * kChunks + (chunk ^ (row & 7))) * 16);
  }
};

}  // namespace quartet::cuda

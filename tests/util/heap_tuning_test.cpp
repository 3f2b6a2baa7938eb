#include "quartet/util/heap_tuning.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace quartet {
namespace {

#if defined(__GLIBC__)
// After keep_freed_heap_memory(), a large temporary comes from the heap, not from its own
// mapping, and freeing it does not hand the pages back: the next step reuses them instead of
// faulting them in again. glibc's defaults (128 KiB mmap threshold, 128 KiB trim threshold)
// fail both checks for a 24 MiB block.
TEST(HeapTuning, LargeTemporariesStayInTheHeap) {
  keep_freed_heap_memory();
  constexpr std::size_t kBytes = 24u << 20;
  const struct mallinfo2 before = mallinfo2();
  void* block = std::malloc(kBytes);
  ASSERT_NE(block, nullptr);
  std::memset(block, 1, kBytes);
  const struct mallinfo2 held = mallinfo2();
  EXPECT_EQ(held.hblks, before.hblks) << "the block was given its own mapping";
  // In use in the heap: grown for it, or (after earlier tests in this process) reusing free space.
  EXPECT_GE(held.uordblks, before.uordblks + kBytes) << "the block is not in the heap";
  std::free(block);
  const struct mallinfo2 after = mallinfo2();
  EXPECT_GE(after.arena, held.arena) << "freeing the block trimmed the heap";
}
#else
TEST(HeapTuning, LargeTemporariesStayInTheHeap) { GTEST_SKIP() << "the heap settings are glibc's"; }
#endif

}  // namespace
}  // namespace quartet

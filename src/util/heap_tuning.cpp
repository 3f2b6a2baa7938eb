#include "quartet/util/heap_tuning.h"

#include <cstdlib>  // defines __GLIBC__ where glibc is the C library

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace quartet {

void keep_freed_heap_memory() {
#if defined(__GLIBC__)
  // Blocks up to glibc's largest mmap threshold (32 MiB on 64-bit) come from the heap, and the
  // heap is never trimmed; larger ones are still mapped and unmapped on their own.
  mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024);
  mallopt(M_TRIM_THRESHOLD, 0x7fffffff);
#endif
}

}  // namespace quartet

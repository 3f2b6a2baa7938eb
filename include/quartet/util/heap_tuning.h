// Process-wide settings of the C library's heap for a training process.
#pragma once

namespace quartet {

// A training step allocates and frees the same large temporaries every step. By default glibc
// serves blocks above a (dynamic) threshold with fresh mmap pages and returns the top of the heap
// to the system whenever it is freed, so every step faults in and zero-fills those pages again:
// half of the CPU trainer's time went to page faults. This keeps freed memory in the heap for
// the next step (the process's peak memory is unchanged). No effect outside glibc.
void keep_freed_heap_memory();

}  // namespace quartet

// The device record of data errors (device_errors.h): one u64 slot per kind in device memory,
// ~0 when clear; a kernel that meets a bad value keeps the smallest (position << 32 | value)
// with atomicMin (device_errors.cuh), and the host reads the slots only when a kernel that
// may record has run since the last look.
#include <array>
#include <cstdint>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device_errors.h"
#include "backend/cuda/message.h"
#include "quartet/error.h"

namespace quartet::cuda {

namespace {

static_assert(kDataErrorKinds == 3, "every slot below starts clear (~0)");
__device__ unsigned long long g_data_errors[kDataErrorKinds] = {~0ull, ~0ull, ~0ull};

// What the host knows about each kind: whether a kernel that may record into it has run since
// the last raise_data_errors(), and the vocabulary its message names.
struct Context {
  bool pending = false;
  std::int64_t vocab = 0;
};
std::array<Context, kDataErrorKinds> g_contexts;

unsigned long long* slots() {
  static unsigned long long* address = [] {
    void* p = nullptr;
    QUARTET_CUDA_CHECK(cudaGetSymbolAddress(&p, g_data_errors));
    return static_cast<unsigned long long*>(p);
  }();
  return address;
}

std::string describe(DataErrorKind kind, std::int64_t position, std::int32_t value, std::int64_t vocab) {
  switch (kind) {
    case DataErrorKind::embedding_token:
      return message("embedding: token ", value, " at position ", position, " is outside the vocabulary of ", vocab);
    case DataErrorKind::embedding_backward_token:
      return message("embedding backward: token ", value, " at position ", position, " is outside the vocabulary of ",
                     vocab);
    case DataErrorKind::loss_target:
      return message("cross_entropy: target ", value, " at row ", position, " is outside the vocabulary of ", vocab,
                     " (or -1 for none)");
  }
  return message("a data error of unknown kind ", static_cast<int>(kind));
}

}  // namespace

unsigned long long* data_error_slot(DataErrorKind kind) { return slots() + static_cast<int>(kind); }

void note_data_error_context(DataErrorKind kind, std::int64_t vocab) {
  Context& c = g_contexts[static_cast<std::size_t>(kind)];
  c.pending = true;
  c.vocab = vocab;
}

void raise_data_errors() {
  bool any_pending = false;
  for (const Context& c : g_contexts) any_pending = any_pending || c.pending;
  if (!any_pending) return;
  // A synchronous copy on the legacy default stream: it waits for the kernels that record.
  std::array<unsigned long long, kDataErrorKinds> recorded{};
  QUARTET_CUDA_CHECK(cudaMemcpyFromSymbol(recorded.data(), g_data_errors, sizeof(recorded)));
  const std::array<Context, kDataErrorKinds> contexts = g_contexts;
  for (Context& c : g_contexts) c.pending = false;
  bool any_recorded = false;
  for (unsigned long long r : recorded) any_recorded = any_recorded || r != ~0ull;
  if (!any_recorded) return;
  std::array<unsigned long long, kDataErrorKinds> clear;
  clear.fill(~0ull);
  QUARTET_CUDA_CHECK(cudaMemcpyToSymbol(g_data_errors, clear.data(), sizeof(clear)));
  for (int k = 0; k < kDataErrorKinds; ++k) {  // the first kind in DataErrorKind's order is reported
    const unsigned long long r = recorded[static_cast<std::size_t>(k)];
    if (r == ~0ull) continue;
    const auto position = static_cast<std::int64_t>(r >> 32);
    const auto value = static_cast<std::int32_t>(static_cast<std::uint32_t>(r & 0xFFFFFFFFull));
    throw Error(describe(static_cast<DataErrorKind>(k), position, value, contexts[static_cast<std::size_t>(k)].vocab));
  }
}

}  // namespace quartet::cuda

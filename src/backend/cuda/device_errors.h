// Errors that kernels find in their data (a token or a loss target outside the vocabulary) are
// recorded on the device rather than checked with a synchronisation per call, like the
// quantizers' non-finite inputs (quantize.h). A kernel that meets one records it in its kind's
// slot (device_errors.cuh) and poisons its output so that the step cannot be applied (the
// embedding row or the row's loss becomes NaN); raise_data_errors() then reports it.
#pragma once

#include <cstdint>

namespace quartet::cuda {

enum class DataErrorKind : int {
  embedding_token = 0,           // embedding_forward
  embedding_backward_token = 1,  // embedding_backward
  loss_target = 2,               // cross_entropy
};
inline constexpr int kDataErrorKinds = 3;

// The device slot of a kind (one u64, ~0 when clear), for kernels to record into.
unsigned long long* data_error_slot(DataErrorKind kind);

// Called by the host when it launches a kernel that may record into `kind`: the vocabulary the
// message will name, and a mark that the next raise_data_errors() must look.
void note_data_error_context(DataErrorKind kind, std::int64_t vocab);

// Throws Error naming the first recorded bad value (operation, value, position, vocabulary) and
// clears the slots; returns at once when no kernel that records has run since the last call.
// Synchronises with the device only when it has to look.
void raise_data_errors();

}  // namespace quartet::cuda

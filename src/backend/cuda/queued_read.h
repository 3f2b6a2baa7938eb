// Backend::make_queued_read on the GPU: a device-to-host copy into page-locked memory and an
// event, queued on the backend's stream; wait() waits for that event only. And
// Backend::make_device_mark: a timing event on that stream.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "quartet/backend/backend.h"

namespace quartet::cuda {

// Host values of `numel` elements of `dtype` stored at `bytes`.
std::vector<double> values_from_bytes(const unsigned char* bytes, DType dtype, std::int64_t numel);

std::unique_ptr<QueuedRead> make_queued_read(std::int64_t max_bytes, cudaStream_t stream);
std::unique_ptr<DeviceMark> make_device_mark(cudaStream_t stream);

}  // namespace quartet::cuda

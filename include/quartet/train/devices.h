// Choosing the device a run trains on.
#pragma once

#include <memory>
#include <string>

#include "quartet/backend/backend.h"

namespace quartet {

// "auto" (the GPU if this build has the CUDA backend and a GPU is present, else the CPU),
// "cpu" or "cuda" (an Error naming why, when there is no usable GPU).
std::unique_ptr<Backend> make_backend(const std::string& device);

// A rank of a multi-GPU run drives GPU `local_rank` of its node: selected before make_backend
// when `device` is cuda (or auto on a machine with a GPU); nothing for the CPU.
void select_device_for_rank(const std::string& device, int local_rank);

}  // namespace quartet

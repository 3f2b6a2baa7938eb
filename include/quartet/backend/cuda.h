// The CUDA backend: the same operations as the CPU backend, on an NVIDIA GPU. Available when
// the program was built with a CUDA compiler and a GPU is present.
#pragma once

#include <memory>
#include <string>

#include "quartet/backend/backend.h"

namespace quartet {

bool cuda_built();
// True if the program has the CUDA backend and a usable GPU (never throws).
bool cuda_available();
// "NVIDIA H100 80GB HBM3 (sm_90, 132 SMs)" or why there is none.
std::string cuda_device_description();
// Throws Error if there is no usable GPU or the build has no CUDA backend.
std::unique_ptr<Backend> make_cuda_backend();

}  // namespace quartet

#include "quartet/train/devices.h"

#include <fmt/format.h>

#include "quartet/backend/cuda.h"
#include "quartet/error.h"

namespace quartet {

std::unique_ptr<Backend> make_backend(const std::string& device) {
  if (device == "cpu") return make_cpu_backend();
  if (device == "cuda") return make_cuda_backend();  // throws, naming why, without a usable GPU
  if (device == "auto") return cuda_available() ? make_cuda_backend() : make_cpu_backend();
  throw Error(fmt::format("--device must be auto, cpu or cuda, got '{}'", device));
}

void select_device_for_rank(const std::string& device, int local_rank) {
  if (device == "cuda" || (device == "auto" && cuda_available())) cuda_select_device(local_rank);
}

}  // namespace quartet

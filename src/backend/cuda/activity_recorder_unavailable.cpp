// cuda_activity_start/stop in a CUDA build configured without CUPTI's headers.
#include "quartet/backend/cuda.h"
#include "quartet/error.h"

namespace quartet {

namespace {
[[noreturn]] void unavailable() {
  throw Error("recording GPU activity needs CUPTI's headers (cupti_activity.h, part of the CUDA toolkit), which this "
              "build was configured without: reconfigure with them installed");
}
}  // namespace

void cuda_activity_check() { unavailable(); }
void cuda_activity_start() { unavailable(); }
std::vector<DeviceActivity> cuda_activity_stop() { unavailable(); }

}  // namespace quartet

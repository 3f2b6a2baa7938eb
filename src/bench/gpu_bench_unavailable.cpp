#include "bench/gpu_bench.h"
#include "quartet/error.h"

namespace quartet {

nlohmann::json run_gpu_benchmarks(const GpuBenchOptions&, const std::function<void(const std::string&)>&) {
  throw Error("bench: this build has no CUDA backend (no CUDA compiler was found when it was configured)");
}

}  // namespace quartet

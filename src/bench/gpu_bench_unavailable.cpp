#include "bench/gpu_bench.h"
#include "bench/train_dp.h"
#include "quartet/error.h"

namespace quartet {

nlohmann::json run_gpu_benchmarks(const GpuBenchOptions&, const std::function<void(const std::string&)>&) {
  throw Error("bench: this build has no CUDA backend (configure on a machine with nvcc and a GPU, or with -DQUARTET_CUDA=ON)");
}

std::vector<DataParallelMeasurement> run_train_dp_rank(const TrainBenchOptions&, const DistEnvironment&) {
  throw Error("bench: this build has no CUDA backend (configure on a machine with nvcc and a GPU, or with -DQUARTET_CUDA=ON)");
}

}  // namespace quartet

// `quartet bench --only train --gpus N`: the training cases on N GPUs of this node (data
// parallel, one rank per GPU, the optimizer state sharded) against one GPU. Each rank runs one
// micro-batch of the one-GPU case's shape per step (the global batch grows with N: weak
// scaling, the way a data-parallel run is sized), so the per-GPU throughput is directly
// comparable with the one-GPU figure:
//   scaling efficiency = tokens/s per GPU at N / tokens/s at 1 (target: >= 0.9 for 1b at 8);
//   optimizer fraction = optimizer state bytes per rank / unsharded (target: <= 1.05 / N).
// The bench command starts the ranks with the `--gpus` launcher (launcher.h); rank 0 writes its
// measurements to a file the launching process reads, then measures one GPU itself and writes
// the rows "train-dp/<recipe>/<model>/gpus<N>" beside the one-GPU "train/<recipe>/<model>".
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench/train_bench.h"
#include "quartet/dist/environment.h"

namespace quartet {

// What rank 0 of an N-GPU run measured for one case.
struct DataParallelMeasurement {
  std::string model, recipe;
  int gpus = 1;
  double tokens_per_s_per_gpu = 0;  // one rank's micro-batch tokens per second of step
  double ms_per_step = 0;
  double peak_gib = 0;              // rank 0's peak GPU memory
  double last_loss = 0;
  std::int64_t optimizer_bytes_per_rank = 0;   // the two moment shards
  std::int64_t optimizer_bytes_unsharded = 0;  // both moments over the whole flat buffer

  nlohmann::json to_json() const;
  // Throws Error naming a missing or mistyped field.
  static DataParallelMeasurement from_json(const nlohmann::json& j);
};

// The row of one case: {"case": "train-dp/<recipe>/<model>/gpus<N>", "gpus", "tokens_per_s"
// (all GPUs), "tokens_per_s_per_gpu", "one_gpu_tokens_per_s", "scaling_efficiency",
// "optimizer_bytes_per_rank", "optimizer_bytes_unsharded", "optimizer_fraction",
// "optimizer_fraction_target" (1.05 / N), "meets_optimizer_target", "ms_per_step", "peak_gib",
// "last_loss"}, and for the 1b case at 8 GPUs "scaling_target" 0.9 and "meets_scaling_target".
// Throws Error for a one-GPU throughput that is not positive or a measurement without GPUs.
nlohmann::json data_parallel_row(const DataParallelMeasurement& m, double one_gpu_tokens_per_s);

// The bench command's checks of --gpus: at least 1, only with the training section alone
// (--only train), not with --pytorch. Throws Error saying what to change.
void check_data_parallel_bench(std::int64_t gpus, const std::vector<std::string>& only, const std::string& pytorch);

// One rank of the N-GPU run (under the launcher's RANK, WORLD_SIZE, ... in `env`): every case
// of `options` (models x recipes). Rank 0 returns the measurements, the others nothing.
// Throws Error without a GPU or in a build without CUDA.
std::vector<DataParallelMeasurement> run_train_dp_rank(const TrainBenchOptions& options, const DistEnvironment& env);

}  // namespace quartet

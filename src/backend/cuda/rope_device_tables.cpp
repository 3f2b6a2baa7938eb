#include "backend/cuda/rope_device_tables.h"

#include <cuda_runtime.h>

#include <map>
#include <mutex>
#include <utility>
#include <vector>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device_memory.h"
#include "quartet/backend/rope_tables.h"

namespace quartet::cuda {

const RopeTables& device_rope_tables(std::int64_t positions, std::int64_t head_dim, double theta) {
  static std::mutex mutex;
  static std::map<std::pair<std::int64_t, double>, RopeTables> cache;
  std::lock_guard<std::mutex> lock(mutex);
  RopeTables& t = cache[{head_dim, theta}];
  if (t.positions >= positions) return t;
  std::vector<float> c, s;
  rope_tables(positions, head_dim, theta, c, s);
  RopeTables fresh;
  fresh.cos = device_alloc(c.size() * sizeof(float));
  fresh.sin = device_alloc(s.size() * sizeof(float));
  QUARTET_CUDA_CHECK(cudaMemcpy(fresh.cos.get(), c.data(), c.size() * sizeof(float), cudaMemcpyHostToDevice));
  QUARTET_CUDA_CHECK(cudaMemcpy(fresh.sin.get(), s.data(), s.size() * sizeof(float), cudaMemcpyHostToDevice));
  fresh.positions = positions;
  t = fresh;
  return t;
}

}  // namespace quartet::cuda

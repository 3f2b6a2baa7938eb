// RoPE cos/sin tables on the device, shared by the attention passes (attention.cu) and the
// cached attention of sampling (attention_cached.cu).
#pragma once

#include <cstdint>
#include <memory>

namespace quartet::cuda {

// Tables [positions, head_dim / 2] in FP32, exactly as the CPU makes them (rope_tables.h).
struct RopeTables {
  std::shared_ptr<void> cos, sin;
  std::int64_t positions = 0;  // rows held: at least the number asked for
};

// The tables for (head_dim, theta) with at least `positions` rows: uploaded once per pair with a
// blocking copy (ordered before every later kernel on the default stream) and replaced by
// longer ones when a later call needs more positions.
const RopeTables& device_rope_tables(std::int64_t positions, std::int64_t head_dim, double theta);

}  // namespace quartet::cuda

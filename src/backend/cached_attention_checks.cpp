// The argument checks every backend's attention_forward_cached makes, in one place so that the
// CPU and the GPU name a wrong argument alike.
#include <fmt/format.h>

#include "quartet/backend/backend.h"
#include "quartet/error.h"

namespace quartet {

void check_cached_attention(const Tensor& out, const Tensor& k_cache, const Tensor& v_cache, const Tensor& qkv,
                            const AttentionShape& s, std::int64_t offset, DType cache_dtype) {
  if (s.batch < 1 || s.seq < 1 || s.heads < 1 || s.kv_heads < 1 || s.head_dim < 2 || s.head_dim % 2 != 0 ||
      s.heads % s.kv_heads != 0) {
    throw Error(fmt::format("cached attention: invalid shape (batch {}, new positions {}, heads {}, kv heads {}, head dim "
                            "{}): heads must be a multiple of kv heads and the head dim even",
                            s.batch, s.seq, s.heads, s.kv_heads, s.head_dim));
  }
  for (const Tensor* t : {&out, &k_cache, &v_cache}) {
    if (t->device() != qkv.device()) throw Error("cached attention: qkv, the output and the caches must be on one device");
  }
  qkv.expect("cached attention qkv", {s.tokens(), s.qkv_width()}, qkv.dtype());
  out.expect("cached attention output", {s.tokens(), s.q_width()}, out.dtype());
  const std::int64_t kv_width = s.kv_heads * s.head_dim;
  if (k_cache.ndim() != 2 || k_cache.dim(1) != kv_width || k_cache.dim(0) % s.batch != 0) {
    throw Error(fmt::format("cached attention: the key cache has shape {}, expected [batch {} x capacity, {}]",
                            shape_string(k_cache.shape()), s.batch, kv_width));
  }
  k_cache.expect("cached attention key cache", k_cache.shape(), cache_dtype);
  v_cache.expect("cached attention value cache", k_cache.shape(), cache_dtype);
  const std::int64_t capacity = k_cache.dim(0) / s.batch;
  if (offset < 0 || offset > capacity - s.seq) {
    throw Error(fmt::format("cached attention: {} new positions at offset {} do not fit a cache of {} positions", s.seq,
                            offset, capacity));
  }
}

}  // namespace quartet

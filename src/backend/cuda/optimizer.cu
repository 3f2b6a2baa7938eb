// The AdamW step on the GPU (ops.h, Backend::adamw_step), decided on the device without a host
// round trip, in three kernels over a table of chunks (at most 16384 elements of one segment
// each; built on the host and uploaded once per segment list):
//  1. a block per chunk: its gradients' sum of squares in double, with a fixed tree;
//  2. one block: the chunks' sums in chunk order, the norm, the decision (loss and norm finite,
//     no non-finite quantizer input), the status slots and the clip factor;
//  3. a block per chunk: nothing when the step is skipped, else the CPU twin's per-element FP32
//     arithmetic, unfused (the _rn operations of host_device.h), so parameters and moments equal
//     the CPU's bit for bit given the same gradients, and the BF16 copy of the parameters.
// Elements are accessed 4 at a time (16 bytes) between each chunk's unaligned ends.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <vector>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/dependent_launch.cuh"
#include "backend/cuda/device_memory.h"
#include "backend/cuda/message.h"
#include "backend/cuda/ops.h"
#include "quartet/error.h"
#include "quartet/numerics/bf16.h"
#include "quartet/numerics/host_device.h"

namespace quartet::cuda {

namespace {

constexpr int kThreads = 256;
constexpr std::int64_t kChunkElements = 16384;  // 64 elements a thread

struct Chunk {
  std::int64_t begin;
  std::int32_t count;
  std::int32_t decay;  // 1: the segment takes weight decay
};

// Written by the decision kernel, read by the update kernel.
struct StepDecision {
  float clip_factor;  // float(max_grad_norm / norm)
  int clip;           // norm > max_grad_norm
  int applied;
};

// The hyperparameters rounded to float on the host exactly as the CPU twin rounds them.
struct AdamWConstants {
  float b1, b2, one_minus_b1, one_minus_b2, c1, c2, lr, eps, weight_decay;
};

// Calls scalar(i) for the elements of [begin, end) outside its 16-byte-aligned body and
// vector(q) for the body's groups of four elements 4q..4q+3, thread by thread of the block.
// Without `vectorised` every element is scalar.
template <class Scalar, class Vector>
__device__ __forceinline__ void for_each_element(const Chunk& c, bool vectorised, Scalar&& scalar, Vector&& vector) {
  const std::int64_t end = c.begin + c.count;
  std::int64_t body_begin = c.begin, body_end = c.begin;
  if (vectorised) {
    const std::int64_t first_boundary = (c.begin + 3) / 4 * 4, last_boundary = end / 4 * 4;
    body_begin = first_boundary < end ? first_boundary : end;
    body_end = last_boundary > body_begin ? last_boundary : body_begin;
  }
  for (std::int64_t i = c.begin + threadIdx.x; i < body_begin; i += kThreads) scalar(i);
  for (std::int64_t q = body_begin / 4 + threadIdx.x; q < body_end / 4; q += kThreads) vector(q);
  for (std::int64_t i = body_end + threadIdx.x; i < end; i += kThreads) scalar(i);
}

// The block's sum of one double per thread, in a fixed tree; the result in thread 0.
__device__ double block_sum(double v) {
  __shared__ double partial[kThreads];
  partial[threadIdx.x] = v;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half /= 2) {
    if (static_cast<int>(threadIdx.x) < half) partial[threadIdx.x] += partial[threadIdx.x + half];
    __syncthreads();
  }
  return partial[0];
}

__global__ void __launch_bounds__(kThreads)
    chunk_sum_of_squares_kernel(const float* __restrict__ grads, const Chunk* __restrict__ chunks, bool vectorised,
                                double* __restrict__ partials) {
  wait_for_upstream_grids();
  const Chunk c = chunks[blockIdx.x];
  double acc = 0.0;
  const auto square = [](float g) { return static_cast<double>(g) * static_cast<double>(g); };
  for_each_element(
      c, vectorised, [&](std::int64_t i) { acc += square(grads[i]); },
      [&](std::int64_t q) {
        const float4 g = reinterpret_cast<const float4*>(grads)[q];
        acc += square(g.x);
        acc += square(g.y);
        acc += square(g.z);
        acc += square(g.w);
      });
  const double total = block_sum(acc);
  if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

// One block: the norm from the chunks' sums (in chunk order per thread, then a fixed tree), and
// the step's decision. `non_finite_record` may be null (no quantizer record to consult).
__global__ void __launch_bounds__(kThreads)
    decide_step_kernel(const double* __restrict__ partials, std::int64_t chunk_count, double* __restrict__ status,
                       unsigned long long* __restrict__ non_finite_record, double max_grad_norm,
                       StepDecision* __restrict__ decision) {
  wait_for_upstream_grids();
  double acc = 0.0;
  for (std::int64_t i = threadIdx.x; i < chunk_count; i += kThreads) acc += partials[i];
  const double sum = block_sum(acc);
  if (threadIdx.x != 0) return;
  const double norm = sqrt(sum);
  const bool input_finite = non_finite_record == nullptr || *non_finite_record == ~0ull;
  const bool applied = isfinite(status[kStepLoss]) && isfinite(norm) && input_finite;
  status[kStepGradNorm] = norm;
  status[kStepApplied] = applied ? 1.0 : 0.0;
  status[kStepNonFiniteInput] = input_finite ? 0.0 : 1.0;
  // The record goes with this step (its key's bits in the status): the next step starts clear.
  status[kStepNonFiniteKey] = input_finite ? 0.0 : __longlong_as_double(static_cast<long long>(*non_finite_record));
  if (!input_finite) *non_finite_record = ~0ull;
  decision->applied = applied ? 1 : 0;
  decision->clip = norm > max_grad_norm ? 1 : 0;
  decision->clip_factor = __double2float_rn(max_grad_norm / norm);
}

// The first half of decide_step_kernel, for Backend::gradient_squares: the chunks' sum (the
// same order, so the same bits) into status[kStepGradNorm], and the quantizers' record.
__global__ void __launch_bounds__(kThreads)
    sum_partials_kernel(const double* __restrict__ partials, std::int64_t chunk_count, double* __restrict__ status,
                        const unsigned long long* __restrict__ non_finite_record) {
  wait_for_upstream_grids();
  double acc = 0.0;
  for (std::int64_t i = threadIdx.x; i < chunk_count; i += kThreads) acc += partials[i];
  const double sum = block_sum(acc);
  if (threadIdx.x != 0) return;
  const bool input_finite = non_finite_record == nullptr || *non_finite_record == ~0ull;
  status[kStepGradNorm] = sum;
  status[kStepNonFiniteInput] = input_finite ? 0.0 : 1.0;
  status[kStepNonFiniteKey] = 0.0;  // summed over ranks, a key would mean nothing: the record stays
}

// The second half, for Backend::adamw_update: the decision from the status slots (summed over
// the ranks in between, by the sharded optimizer).
__global__ void decide_from_status_kernel(double* __restrict__ status, double max_grad_norm,
                                          StepDecision* __restrict__ decision) {
  wait_for_upstream_grids();
  const double norm = sqrt(status[kStepGradNorm]);
  const bool applied = isfinite(status[kStepLoss]) && isfinite(norm) && status[kStepNonFiniteInput] == 0.0;
  status[kStepGradNorm] = norm;
  status[kStepApplied] = applied ? 1.0 : 0.0;
  decision->applied = applied ? 1 : 0;
  decision->clip = norm > max_grad_norm ? 1 : 0;
  decision->clip_factor = __double2float_rn(max_grad_norm / norm);
}

// The CPU twin's per-element update (optimizer.cpp), operation by operation.
__device__ __forceinline__ void adamw_element(float& p, float& m, float& v, float g, const AdamWConstants& k, float wd,
                                              bool clip, float clip_factor) {
  const float gi = clip ? fmul(g, clip_factor) : g;
  m = fadd(fmul(k.b1, m), fmul(k.one_minus_b1, gi));
  v = fadd(fmul(k.b2, v), fmul(fmul(k.one_minus_b2, gi), gi));
  const float m_hat = fdiv(m, k.c1), v_hat = fdiv(v, k.c2);
  p = fsub(p, fmul(k.lr, fadd(fdiv(m_hat, fadd(fsqrt(v_hat), k.eps)), fmul(wd, p))));
}

__global__ void __launch_bounds__(kThreads)
    adamw_kernel(float* __restrict__ params, std::uint16_t* __restrict__ params_bf16, const float* __restrict__ grads,
                 float* __restrict__ m, float* __restrict__ v, const Chunk* __restrict__ chunks, bool vectorised,
                 AdamWConstants k, const StepDecision* __restrict__ decision) {
  wait_for_upstream_grids();
  if (!decision->applied) return;
  const Chunk c = chunks[blockIdx.x];
  const float wd = c.decay ? k.weight_decay : 0.0f;
  const bool clip = decision->clip != 0;
  const float factor = decision->clip_factor;
  for_each_element(
      c, vectorised,
      [=](std::int64_t i) {
        float p = params[i], mi = m[i], vi = v[i];
        adamw_element(p, mi, vi, grads[i], k, wd, clip, factor);
        params[i] = p, m[i] = mi, v[i] = vi;
        if (params_bf16 != nullptr) params_bf16[i] = bf16_bits(p);
      },
      [=](std::int64_t q) {
        float4 p = reinterpret_cast<float4*>(params)[q], mq = reinterpret_cast<float4*>(m)[q],
               vq = reinterpret_cast<float4*>(v)[q];
        const float4 g = reinterpret_cast<const float4*>(grads)[q];
        adamw_element(p.x, mq.x, vq.x, g.x, k, wd, clip, factor);
        adamw_element(p.y, mq.y, vq.y, g.y, k, wd, clip, factor);
        adamw_element(p.z, mq.z, vq.z, g.z, k, wd, clip, factor);
        adamw_element(p.w, mq.w, vq.w, g.w, k, wd, clip, factor);
        reinterpret_cast<float4*>(params)[q] = p;
        reinterpret_cast<float4*>(m)[q] = mq;
        reinterpret_cast<float4*>(v)[q] = vq;
        if (params_bf16 != nullptr) {
          const uint2 packed{bf16_bits(p.x) | static_cast<unsigned>(bf16_bits(p.y)) << 16,
                             bf16_bits(p.z) | static_cast<unsigned>(bf16_bits(p.w)) << 16};
          reinterpret_cast<uint2*>(params_bf16)[q] = packed;
        }
      });
}

// ---- host side ----

// The chunk table of one segment list, with the step's scratch: rebuilt only when the list or
// the buffers' size changes.
struct StepPlan {
  std::int64_t numel = -1;
  std::vector<ParameterSegment> segments;
  std::vector<Chunk> host_chunks;
  std::shared_ptr<void> chunks;    // Chunk[chunk_count]
  std::shared_ptr<void> partials;  // double[chunk_count]
  std::shared_ptr<void> decision;  // StepDecision

  std::int64_t chunk_count() const { return static_cast<std::int64_t>(host_chunks.size()); }
};

bool same_segments(const std::vector<ParameterSegment>& a, const std::vector<ParameterSegment>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i].offset != b[i].offset || a[i].count != b[i].count || a[i].decay != b[i].decay) return false;
  }
  return true;
}

const StepPlan& step_plan(std::int64_t numel, const std::vector<ParameterSegment>& segments, cudaStream_t stream) {
  // Never destroyed: its device buffers would otherwise be freed after the CUDA runtime at exit.
  static StepPlan* plan = new StepPlan;
  if (plan->numel == numel && same_segments(plan->segments, segments)) return *plan;
  StepPlan fresh;
  fresh.numel = numel;
  fresh.segments = segments;
  for (const ParameterSegment& s : segments) {
    for (std::int64_t at = 0; at < s.count; at += kChunkElements) {
      fresh.host_chunks.push_back(
          {s.offset + at, static_cast<std::int32_t>(std::min(kChunkElements, s.count - at)), s.decay ? 1 : 0});
    }
  }
  const std::size_t table_bytes = fresh.host_chunks.size() * sizeof(Chunk);
  fresh.chunks = device_alloc(table_bytes);
  fresh.partials = device_alloc(fresh.host_chunks.size() * sizeof(double));
  fresh.decision = device_alloc(sizeof(StepDecision));
  // From pageable memory: staged at once, no device synchronisation (and the vector stays alive).
  if (table_bytes > 0) {
    QUARTET_CUDA_CHECK(
        cudaMemcpyAsync(fresh.chunks.get(), fresh.host_chunks.data(), table_bytes, cudaMemcpyHostToDevice, stream));
  }
  *plan = std::move(fresh);
  return *plan;
}

void expect_flat_f32(const Tensor& t, const char* what, std::int64_t numel) {
  if (!t.defined() || t.device() != Device::cuda) {
    throw Error(message("adamw: ", what, ": expected a GPU tensor, got ", t.defined() ? "a CPU tensor" : "none"));
  }
  if (t.dtype() != DType::f32 || t.numel() != numel) {
    throw Error(message("adamw: parameters, gradients and moments must be f32 buffers of ", numel, " elements; ",
                        what, " is ", dtype_name(t.dtype()), " ", shape_string(t.shape())));
  }
}

bool aligned(const void* p, std::size_t bytes) { return reinterpret_cast<std::uintptr_t>(p) % bytes == 0; }

// AdamW's constants of one step, as the kernels take them.
AdamWConstants adamw_constants(const AdamWStep& hp) {
  AdamWConstants k{};
  k.b1 = static_cast<float>(hp.beta1);
  k.b2 = static_cast<float>(hp.beta2);
  k.one_minus_b1 = 1.0f - k.b1;
  k.one_minus_b2 = 1.0f - k.b2;
  k.c1 = static_cast<float>(1.0 - std::pow(hp.beta1, static_cast<double>(hp.step)));
  k.c2 = static_cast<float>(1.0 - std::pow(hp.beta2, static_cast<double>(hp.step)));
  k.lr = static_cast<float>(hp.lr);
  k.eps = static_cast<float>(hp.eps);
  k.weight_decay = static_cast<float>(hp.weight_decay);
  return k;
}

}  // namespace

void adamw_step(Tensor& params, Tensor& params_bf16, const Tensor& grads, Tensor& m, Tensor& v,
                const std::vector<ParameterSegment>& segments, const AdamWStep& hp, Tensor& status,
                unsigned long long* non_finite_record, cudaStream_t stream) {
  const std::int64_t n = params.numel();
  expect_flat_f32(params, "the parameters", n);
  expect_flat_f32(grads, "the gradients", n);
  expect_flat_f32(m, "the first moments", n);
  expect_flat_f32(v, "the second moments", n);
  if (params_bf16.defined()) {
    params_bf16.expect("adamw bf16 parameter copy", {n}, DType::bf16);
    if (params_bf16.device() != Device::cuda) throw Error("adamw bf16 parameter copy: expected a GPU tensor");
  }
  status.expect("adamw step status", {kStepSlots}, DType::f64);
  if (status.device() != Device::cuda) throw Error("adamw step status: expected a GPU tensor, got a CPU tensor");
  check_parameter_segments(segments, n);

  const StepPlan& plan = step_plan(n, segments, stream);
  const auto chunks = static_cast<unsigned>(plan.chunk_count());
  auto* p = static_cast<float*>(params.raw());
  auto* p16 = params_bf16.defined() ? static_cast<std::uint16_t*>(params_bf16.raw()) : nullptr;
  const auto* g = static_cast<const float*>(grads.raw());
  auto* mp = static_cast<float*>(m.raw());
  auto* vp = static_cast<float*>(v.raw());
  const bool vectorised = aligned(p, 16) && aligned(g, 16) && aligned(mp, 16) && aligned(vp, 16) &&
                          (p16 == nullptr || aligned(p16, 8));
  const auto* table = ptr<const Chunk>(plan.chunks);
  auto* decision = ptr<StepDecision>(plan.decision);

  if (chunks > 0) {
    launch_dependent(chunk_sum_of_squares_kernel, chunks, kThreads, 0, stream, g, table, vectorised, ptr<double>(plan.partials));
    QUARTET_CUDA_LAUNCHED();
  }
  launch_dependent(decide_step_kernel, 1, kThreads, 0, stream, ptr<double>(plan.partials), plan.chunk_count(),
                                                 static_cast<double*>(status.raw()), non_finite_record,
                                                 hp.max_grad_norm, decision);
  QUARTET_CUDA_LAUNCHED();
  if (chunks == 0) return;

  launch_dependent(adamw_kernel, chunks, kThreads, 0, stream, p, p16, g, mp, vp, table, vectorised, adamw_constants(hp), decision);
  QUARTET_CUDA_LAUNCHED();
}

namespace {

void expect_status(const Tensor& status) {
  status.expect("adamw step status", {kStepSlots}, DType::f64);
  if (status.device() != Device::cuda) throw Error("adamw step status: expected a GPU tensor, got a CPU tensor");
}

}  // namespace

void gradient_squares(const Tensor& grads, const std::vector<ParameterSegment>& segments, Tensor& status,
                      const unsigned long long* non_finite_record, cudaStream_t stream) {
  const std::int64_t n = grads.numel();
  expect_flat_f32(grads, "the gradients", n);
  expect_status(status);
  check_parameter_segments(segments, n);
  const StepPlan& plan = step_plan(n, segments, stream);
  const auto chunks = static_cast<unsigned>(plan.chunk_count());
  const auto* g = static_cast<const float*>(grads.raw());
  if (chunks > 0) {
    launch_dependent(chunk_sum_of_squares_kernel, chunks, kThreads, 0, stream, g, ptr<const Chunk>(plan.chunks), aligned(g, 16),
                                                                 ptr<double>(plan.partials));
    QUARTET_CUDA_LAUNCHED();
  }
  launch_dependent(sum_partials_kernel, 1, kThreads, 0, stream, ptr<double>(plan.partials), plan.chunk_count(),
                                                  static_cast<double*>(status.raw()), non_finite_record);
  QUARTET_CUDA_LAUNCHED();
}

void adamw_update(Tensor& params, Tensor& params_bf16, const Tensor& grads, Tensor& m, Tensor& v,
                  const std::vector<ParameterSegment>& segments, const AdamWStep& hp, Tensor& status,
                  cudaStream_t stream) {
  const std::int64_t n = params.numel();
  expect_flat_f32(params, "the parameters", n);
  expect_flat_f32(grads, "the gradients", n);
  expect_flat_f32(m, "the first moments", n);
  expect_flat_f32(v, "the second moments", n);
  if (params_bf16.defined()) {
    params_bf16.expect("adamw bf16 parameter copy", {n}, DType::bf16);
    if (params_bf16.device() != Device::cuda) throw Error("adamw bf16 parameter copy: expected a GPU tensor");
  }
  expect_status(status);
  check_parameter_segments(segments, n);
  const StepPlan& plan = step_plan(n, segments, stream);
  const auto chunks = static_cast<unsigned>(plan.chunk_count());
  auto* p = static_cast<float*>(params.raw());
  auto* p16 = params_bf16.defined() ? static_cast<std::uint16_t*>(params_bf16.raw()) : nullptr;
  const auto* g = static_cast<const float*>(grads.raw());
  auto* mp = static_cast<float*>(m.raw());
  auto* vp = static_cast<float*>(v.raw());
  const bool vectorised = aligned(p, 16) && aligned(g, 16) && aligned(mp, 16) && aligned(vp, 16) &&
                          (p16 == nullptr || aligned(p16, 8));
  auto* decision = ptr<StepDecision>(plan.decision);
  launch_dependent(decide_from_status_kernel, 1, 1, 0, stream, static_cast<double*>(status.raw()), hp.max_grad_norm, decision);
  QUARTET_CUDA_LAUNCHED();
  if (chunks == 0) return;
  launch_dependent(adamw_kernel, chunks, kThreads, 0, stream, p, p16, g, mp, vp, ptr<const Chunk>(plan.chunks), vectorised,
                                                adamw_constants(hp), decision);
  QUARTET_CUDA_LAUNCHED();
}

}  // namespace quartet::cuda

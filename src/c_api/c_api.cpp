// The C interface (include/quartet/c_api.h) over the quantized linear layer: handles that own
// a backend, a recipe and what a forward call saves; caller memory seen as non-owning Tensors;
// every C++ exception turned into a status code and a per-thread message.
#include "quartet/c_api.h"

#include <fmt/format.h>

#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "c_api/device_bridge.h"
#include "c_api/recipe_options.h"
#include "quartet/backend/cuda.h"
#include "quartet/error.h"
#include "quartet/nn/linear.h"
#include "quartet/nn/recipe.h"

// Handles hold shared state, so destroying a context before the layers made from it (as a
// garbage collector may) leaves the layers working.
struct quartet_context {
  struct State {
    std::unique_ptr<quartet::Backend> backend;
    quartet::Device device = quartet::Device::cpu;
    int index = 0;
    std::mutex mutex;  // the backends are not written for concurrent calls
  };
  std::shared_ptr<State> state;
};

struct quartet_linear {
  std::shared_ptr<quartet_context::State> context;
  quartet::Recipe recipe;
  std::string description;
  std::int64_t in_features = 0;
  std::int64_t out_features = 0;
  std::uint64_t seed = 0;
  std::uint32_t layer = 0;
};

struct quartet_linear_saved {
  std::shared_ptr<quartet_context::State> context;  // frees device memory on its device
  const quartet_linear* owner = nullptr;            // the handle the forward was called on
  quartet::LinearSaved saved;                   // without X, which the caller keeps
  std::uint32_t call = 0;
};

namespace quartet::c_api {
namespace {

thread_local std::string last_error;

quartet_status fail(quartet_status status, std::string message) {
  last_error = std::move(message);
  return status;
}

// An error in the caller's arguments, detected by this layer before anything runs.
class ArgumentError : public Error {
 public:
  using Error::Error;
};

// Something this build or machine cannot do (a CUDA context without the CUDA backend).
class UnsupportedError : public Error {
 public:
  using Error::Error;
};

template <class F>
quartet_status guarded(const char* function, F&& body) {
  try {
    body();
    return QUARTET_OK;
  } catch (const ArgumentError& e) {
    return fail(QUARTET_ERROR_INVALID_ARGUMENT, fmt::format("{}: {}", function, e.what()));
  } catch (const UnsupportedError& e) {
    return fail(QUARTET_ERROR_UNSUPPORTED, fmt::format("{}: {}", function, e.what()));
  } catch (const NonFiniteError& e) {
    return fail(QUARTET_ERROR_NON_FINITE, fmt::format("{}: {}", function, e.what()));
  } catch (const Error& e) {
    return fail(QUARTET_ERROR_FAILED, fmt::format("{}: {}", function, e.what()));
  } catch (const std::bad_alloc&) {
    return fail(QUARTET_ERROR_OUT_OF_MEMORY, fmt::format("{}: out of memory", function));
  } catch (const std::exception& e) {
    return fail(QUARTET_ERROR_FAILED, fmt::format("{}: {}", function, e.what()));
  } catch (...) {
    return fail(QUARTET_ERROR_FAILED, fmt::format("{}: an unknown error", function));
  }
}

template <class T>
void require(const T* pointer, const char* what) {
  if (pointer == nullptr) throw ArgumentError(fmt::format("{} is null", what));
}

DType activation_dtype(quartet_dtype dtype) {
  switch (dtype) {
    case QUARTET_DTYPE_FLOAT32: return DType::f32;
    case QUARTET_DTYPE_BFLOAT16: return DType::bf16;
  }
  throw ArgumentError(fmt::format("dtype: expected QUARTET_DTYPE_FLOAT32 (0) or QUARTET_DTYPE_BFLOAT16 (1), got {}",
                                  static_cast<int>(dtype)));
}

// Caller memory as a Tensor that never frees it.
Tensor borrow(const void* pointer, Shape shape, DType dtype, Device device) {
  return Tensor(std::shared_ptr<void>(const_cast<void*>(pointer), [](void*) {}), std::move(shape), dtype, device);
}

// What a GEMM's reduction dimension must be a multiple of: the rotation size of its operands,
// if they are rotated (quantizers pad a partial scale block, but a rotation needs whole blocks).
std::int64_t rotation_multiple(const OperandRule& rule) { return rule.quantized() && rule.rotation > 0 ? rule.rotation : 1; }

void check_features(const Recipe& r, std::int64_t in_features, std::int64_t out_features) {
  if (in_features < 1) throw ArgumentError(fmt::format("in_features must be at least 1, got {}", in_features));
  if (out_features < 1) throw ArgumentError(fmt::format("out_features must be at least 1, got {}", out_features));
  const std::int64_t k = rotation_multiple(r.fwd_x), n = rotation_multiple(r.dgrad_e);
  if (in_features % k != 0) {
    throw ArgumentError(fmt::format("recipe {} rotates the forward GEMM with RHT-{} along in_features = {}, which is not a "
                                    "multiple of {}",
                                    r.name, k, in_features, k));
  }
  if (out_features % n != 0) {
    throw ArgumentError(fmt::format("recipe {} rotates the dgrad GEMM with RHT-{} along out_features = {}, which is not a "
                                    "multiple of {}",
                                    r.name, n, out_features, n));
  }
}

void check_tokens(const quartet_linear& l, std::int64_t tokens, bool training) {
  if (tokens < 1) throw ArgumentError(fmt::format("tokens must be at least 1, got {}", tokens));
  const std::int64_t m = rotation_multiple(l.recipe.wgrad_et);
  if (training && tokens % m != 0) {
    throw ArgumentError(fmt::format("recipe {} rotates the wgrad GEMM with RHT-{} along the tokens, and {} tokens is not a "
                                    "multiple of {}",
                                    l.recipe.name, m, tokens, m));
  }
}

LinearRandom random_of(const quartet_linear& l, std::uint32_t call) { return LinearRandom{l.seed, l.layer, call}; }

}  // namespace
}  // namespace quartet::c_api

using namespace quartet;
using namespace quartet::c_api;

extern "C" {

int32_t quartet_c_api_version(void) { return QUARTET_C_API_VERSION; }

const char* quartet_version(void) { return QUARTET_VERSION_STRING; }

const char* quartet_last_error(void) { return last_error.c_str(); }

int32_t quartet_cuda_built(void) { return cuda_built() ? 1 : 0; }

int32_t quartet_recipe_count(void) { return static_cast<int32_t>(recipe_names().size()); }

const char* quartet_recipe_name(int32_t index) {
  const auto& names = recipe_names();
  if (index < 0 || static_cast<std::size_t>(index) >= names.size()) return nullptr;
  return names[static_cast<std::size_t>(index)].c_str();
}

quartet_status quartet_context_create(quartet_device_type device, int32_t device_index, quartet_context** out) {
  return guarded("quartet_context_create", [&] {
    require(out, "out");
    *out = nullptr;
    Device d = Device::cpu;
    if (device == QUARTET_DEVICE_CUDA) {
      d = Device::cuda;
    } else if (device != QUARTET_DEVICE_CPU) {
      throw ArgumentError(fmt::format("device: expected QUARTET_DEVICE_CPU (0) or QUARTET_DEVICE_CUDA (1), got {}",
                                      static_cast<int>(device)));
    }
    if (d == Device::cuda && !cuda_built()) {
      throw UnsupportedError("device: this build of quartet has no CUDA backend (rebuild with the CUDA toolkit and a GPU, or -DQUARTET_CUDA=ON)");
    }
    auto state = std::make_shared<quartet_context::State>();
    state->backend = make_device_backend(d, device_index);
    state->device = d;
    state->index = device_index;
    *out = new quartet_context{std::move(state)};
  });
}

void quartet_context_destroy(quartet_context* context) { delete context; }

quartet_status quartet_context_check_errors(quartet_context* context) {
  return guarded("quartet_context_check_errors", [&] {
    require(context, "context");
    auto& s = *context->state;
    std::lock_guard lock(s.mutex);
    run_on_stream(s.device, s.index, nullptr, [&] { s.backend->raise_pending_errors(); });
  });
}

quartet_status quartet_linear_create(quartet_context* context, const char* recipe, const char* const* option_names,
                                     const char* const* option_values, int32_t option_count, int64_t in_features,
                                     int64_t out_features, uint64_t seed, uint32_t layer, quartet_linear** out) {
  return guarded("quartet_linear_create", [&] {
    require(out, "out");
    *out = nullptr;
    require(context, "context");
    require(recipe, "recipe");
    if (option_count < 0) throw ArgumentError(fmt::format("option_count must be at least 0, got {}", option_count));
    if (option_count > 0) {
      require(option_names, "option_names");
      require(option_values, "option_values");
    }
    std::vector<std::pair<std::string, std::string>> options;
    for (int32_t i = 0; i < option_count; ++i) {
      if (option_names[i] == nullptr) throw ArgumentError(fmt::format("option_names[{}] is null", i));
      if (option_values[i] == nullptr) throw ArgumentError(fmt::format("option_values[{}] (for {}) is null", i, option_names[i]));
      options.emplace_back(option_names[i], option_values[i]);
    }
    if (static_cast<std::uint64_t>(layer) * kStreamsPerLinear > 0xFFFFFFFFull) {
      throw ArgumentError(fmt::format("layer {} is too large: each layer takes {} random streams of 2^32", layer,
                                      kStreamsPerLinear));
    }
    auto l = std::make_unique<quartet_linear>();
    try {
      l->recipe = make_recipe(recipe, parse_recipe_options(options));
    } catch (const Error& e) {
      throw ArgumentError(e.what());
    }
    check_features(l->recipe, in_features, out_features);
    l->context = context->state;
    l->description = l->recipe.describe();
    l->in_features = in_features;
    l->out_features = out_features;
    l->seed = seed;
    l->layer = layer;
    *out = l.release();
  });
}

void quartet_linear_destroy(quartet_linear* linear) { delete linear; }

const char* quartet_linear_describe(const quartet_linear* linear) {
  return linear == nullptr ? "" : linear->description.c_str();
}

int64_t quartet_linear_token_multiple(const quartet_linear* linear) {
  return linear == nullptr ? 1 : rotation_multiple(linear->recipe.wgrad_et);
}

quartet_status quartet_linear_forward(quartet_linear* linear, const void* x, quartet_dtype dtype, int64_t tokens,
                                      const float* w, void* y, uint32_t call, void* stream,
                                      quartet_linear_saved** saved) {
  return guarded("quartet_linear_forward", [&] {
    if (saved != nullptr) *saved = nullptr;
    require(linear, "linear");
    require(x, "x");
    require(w, "w");
    require(y, "y");
    const DType dt = activation_dtype(dtype);
    check_tokens(*linear, tokens, saved != nullptr);
    auto& s = *linear->context;
    check_device_pointer(s.device, s.index, x, "x");
    check_device_pointer(s.device, s.index, w, "w");
    check_device_pointer(s.device, s.index, y, "y");
    const Tensor tx = borrow(x, {tokens, linear->in_features}, dt, s.device);
    const Tensor tw = borrow(w, {linear->out_features, linear->in_features}, DType::f32, s.device);
    Tensor ty = borrow(y, {tokens, linear->out_features}, dt, s.device);
    auto result = std::make_unique<quartet_linear_saved>();
    {
      std::lock_guard lock(s.mutex);
      run_on_stream(s.device, s.index, stream, [&] {
        linear_forward(*s.backend, linear->recipe, tx, tw, ty, result->saved, random_of(*linear, call));
      });
    }
    if (saved == nullptr) return;
    // X stays the caller's: the backward is given it again, so no pointer to it is kept.
    result->saved.x = Tensor{};
    result->context = linear->context;
    result->owner = linear;
    result->call = call;
    *saved = result.release();
  });
}

quartet_status quartet_linear_backward(quartet_linear* linear, const quartet_linear_saved* saved, const void* x,
                                       const float* w, const void* dy, quartet_dtype dtype, int64_t tokens, void* dx,
                                       float* dw, int32_t accumulate_dw, uint32_t call, void* stream) {
  return guarded("quartet_linear_backward", [&] {
    require(linear, "linear");
    require(x, "x");
    require(w, "w");
    require(dy, "dy");
    require(dx, "dx");
    require(dw, "dw");
    const DType dt = activation_dtype(dtype);
    if (accumulate_dw != 0 && accumulate_dw != 1) {
      throw ArgumentError(fmt::format("accumulate_dw must be 0 or 1, got {}", accumulate_dw));
    }
    check_tokens(*linear, tokens, true);
    if (saved != nullptr) {
      if (saved->owner != linear) throw ArgumentError("saved: the object was made by another layer's forward");
      if (saved->call != call) {
        throw ArgumentError(fmt::format("call: the forward that made `saved` was call {}, not {}", saved->call, call));
      }
      if (saved->saved.tokens != tokens) {
        throw ArgumentError(fmt::format("tokens: the forward that made `saved` had {} tokens, not {}", saved->saved.tokens,
                                        tokens));
      }
    }
    auto& s = *linear->context;
    for (const auto& [p, what] : {std::pair<const void*, const char*>{x, "x"}, {w, "w"}, {dy, "dy"}, {dx, "dx"}, {dw, "dw"}}) {
      check_device_pointer(s.device, s.index, p, what);
    }
    const Tensor tx = borrow(x, {tokens, linear->in_features}, dt, s.device);
    const Tensor tw = borrow(w, {linear->out_features, linear->in_features}, DType::f32, s.device);
    const Tensor tdy = borrow(dy, {tokens, linear->out_features}, dt, s.device);
    Tensor tdx = borrow(dx, {tokens, linear->in_features}, dt, s.device);
    Tensor tdw = borrow(dw, {linear->out_features, linear->in_features}, DType::f32, s.device);
    const LinearRandom random = random_of(*linear, call);
    std::lock_guard lock(s.mutex);
    run_on_stream(s.device, s.index, stream, [&] {
      LinearSaved state;
      // Else recompute what the forward saved (its quantizers are deterministic given the
      // call), without the forward's product.
      state = saved != nullptr ? saved->saved : linear_saved_for_backward(*s.backend, linear->recipe, tx, tw, random);
      if (linear->recipe.saves_high_precision_x()) state.x = tx;
      if (accumulate_dw == 0) s.backend->fill(tdw, 0.0);
      linear_backward(*s.backend, linear->recipe, tdy, tw, state, tdx, tdw, random);
    });
  });
}

void quartet_linear_saved_destroy(quartet_linear_saved* saved) {
  if (saved == nullptr) return;
  // Device memory is released on the device it belongs to.
  const auto& s = *saved->context;
  try {
    run_on_stream(s.device, s.index, nullptr, [&] { delete saved; });
  } catch (...) {
    delete saved;
  }
}

}  // extern "C"

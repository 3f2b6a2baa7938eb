/* The C interface to Quartet's quantized linear layer, for bindings in other languages (the
 * Python package under python/ loads it with ctypes). It is plain C with fixed-width types and
 * opaque handles, so it depends on no C++ standard library, Python or PyTorch version.
 *
 * Conventions:
 *  - Every function that can fail returns a quartet_status; on failure,
 *    quartet_last_error() returns a message naming the argument, what was found and what was
 *    expected. The message is kept per thread until that thread's next failing call.
 *  - Sizes are int64_t. Matrices are dense, row-major, with no padding between rows.
 *  - Memory is the caller's: the library reads and writes the buffers it is given and keeps no
 *    pointer to them after a call returns. On a CUDA context they are device pointers and the
 *    work is ordered on the given stream (NULL: the legacy default stream); on the CPU they
 *    are host pointers and the stream must be NULL.
 *  - A handle may be destroyed in any order relative to the handles made from it: a layer
 *    keeps its context's backend alive, a saved object its layer.
 *  - One handle may be used from several threads; calls on one context run one at a time.
 *
 * The layer computes Y = X W^T with X [tokens, in_features], W [out_features, in_features]
 * (the FP32 master weight, as torch.nn.Linear stores it) and Y [tokens, out_features], under a
 * recipe (docs/recipes.md), exactly as quartet's own trainer does (include/quartet/nn/linear.h).
 */
#ifndef QUARTET_C_API_H
#define QUARTET_C_API_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define QUARTET_C_EXPORT __attribute__((visibility("default")))
#else
#define QUARTET_C_EXPORT
#endif

/* Raised whenever a function's signature or meaning changes; a binding checks it at load. */
#define QUARTET_C_API_VERSION 1

typedef enum quartet_status {
  QUARTET_OK = 0,
  QUARTET_ERROR_INVALID_ARGUMENT = 1, /* a null, out-of-range or mismatched argument */
  QUARTET_ERROR_UNSUPPORTED = 2,      /* e.g. a CUDA context in a build without CUDA */
  QUARTET_ERROR_NON_FINITE = 3,       /* a quantizer met a NaN or an infinity */
  QUARTET_ERROR_OUT_OF_MEMORY = 4,
  QUARTET_ERROR_FAILED = 5 /* any other error (a CUDA call that failed, ...) */
} quartet_status;

typedef enum quartet_device_type { QUARTET_DEVICE_CPU = 0, QUARTET_DEVICE_CUDA = 1 } quartet_device_type;

/* Element types of the activations X, Y, dY, dX (all four share one). W and dW are FP32. */
typedef enum quartet_dtype { QUARTET_DTYPE_FLOAT32 = 0, QUARTET_DTYPE_BFLOAT16 = 1 } quartet_dtype;

typedef struct quartet_context quartet_context;           /* a backend on one device */
typedef struct quartet_linear quartet_linear;             /* a recipe, a shape, a random stream */
typedef struct quartet_linear_saved quartet_linear_saved; /* what one forward keeps for its backward */

/* ---- the library ---- */
QUARTET_C_EXPORT int32_t quartet_c_api_version(void);
QUARTET_C_EXPORT const char* quartet_version(void);       /* the project version, "0.1.0" */
QUARTET_C_EXPORT const char* quartet_last_error(void);    /* "" when this thread has had no error */
QUARTET_C_EXPORT int32_t quartet_cuda_built(void);        /* 1 if this build has the CUDA backend */
QUARTET_C_EXPORT int32_t quartet_recipe_count(void);
QUARTET_C_EXPORT const char* quartet_recipe_name(int32_t index); /* NULL when out of range */

/* ---- contexts ---- */
/* The CPU has one device, index 0; on CUDA the index is the CUDA device ordinal. */
QUARTET_C_EXPORT quartet_status quartet_context_create(quartet_device_type device, int32_t device_index,
                                                       quartet_context** out);
QUARTET_C_EXPORT void quartet_context_destroy(quartet_context* context); /* NULL is ignored */
/* Waits for the context's queued work and reports what asynchronous work found (on a GPU a
 * quantizer records a non-finite input on the device instead of stopping: QUARTET_ERROR_NON_FINITE
 * here). The CPU reports such errors at once, from the call that met them. */
QUARTET_C_EXPORT quartet_status quartet_context_check_errors(quartet_context* context);

/* ---- layers ---- */
/* Recipe options, as parallel arrays of `count` names and values (the ablation switches of
 * docs/recipes.md): quantize_forward, quantize_backward, four_over_six ("true"/"false");
 * backward_rotation, eden_group (integers); forward_clip, backward_headroom, backward_clip
 * (numbers); backward_quantizer (a quantizer name). An unknown name, a malformed value or an
 * option the recipe has no use for is an error.
 * `seed` and `layer` select the layer's random streams: two layers with the same seed and
 * layer index draw the same bits. in_features and out_features are checked against what the
 * recipe's rotations need. */
QUARTET_C_EXPORT quartet_status quartet_linear_create(quartet_context* context, const char* recipe,
                                                      const char* const* option_names,
                                                      const char* const* option_values, int32_t option_count,
                                                      int64_t in_features, int64_t out_features, uint64_t seed,
                                                      uint32_t layer, quartet_linear** out);
QUARTET_C_EXPORT void quartet_linear_destroy(quartet_linear* linear); /* NULL is ignored */
/* The recipe as run, one line per GEMM (for logs). Valid while the layer lives. */
QUARTET_C_EXPORT const char* quartet_linear_describe(const quartet_linear* linear);
/* The number of tokens of a training call must be a multiple of this (the weight-gradient
 * GEMM's rotation runs along the tokens); 1 when anything goes. */
QUARTET_C_EXPORT int64_t quartet_linear_token_multiple(const quartet_linear* linear);

/* y = x w^T. `call` numbers this forward/backward pair: each call draws fresh random bits
 * (seed, layer, call), and the backward must be given the same number. If `saved` is not NULL
 * it receives a new object holding what the backward needs (release it with
 * quartet_linear_saved_destroy); pass NULL for inference. */
QUARTET_C_EXPORT quartet_status quartet_linear_forward(quartet_linear* linear, const void* x, quartet_dtype dtype,
                                                       int64_t tokens, const float* w, void* y, uint32_t call,
                                                       void* stream, quartet_linear_saved** saved);

/* dx = dy w (overwritten); dw = dy^T x, added to dw's values if accumulate_dw is 1, written if 0.
 * x and w must hold what the forward was given. `saved` is the forward's object; NULL
 * recomputes it from x, w and `call` (bitwise the same, at the cost of the forward's
 * quantizations; the forward's product is not recomputed). */
QUARTET_C_EXPORT quartet_status quartet_linear_backward(quartet_linear* linear, const quartet_linear_saved* saved,
                                                        const void* x, const float* w, const void* dy,
                                                        quartet_dtype dtype, int64_t tokens, void* dx, float* dw,
                                                        int32_t accumulate_dw, uint32_t call, void* stream);
QUARTET_C_EXPORT void quartet_linear_saved_destroy(quartet_linear_saved* saved); /* NULL is ignored */

#ifdef __cplusplus
}
#endif

#endif /* QUARTET_C_API_H */

// The quantized linear layer Y = X W^T: one piece of code that executes any recipe row
// (recipe.h) on any backend. The forward pass saves exactly what the recipe says the backward
// pass needs.
#pragma once

#include <cstdint>

#include "quartet/backend/backend.h"
#include "quartet/nn/recipe.h"

namespace quartet {

// Where a layer's random bits come from: each layer instance owns a block of Philox streams
// (one per operand, one for its backward rotation signs); `call` counts forward/backward
// calls (the trainer uses the micro-step), so every call draws fresh bits.
struct LinearRandom {
  std::uint64_t seed = 0;
  std::uint32_t layer = 0;
  std::uint32_t call = 0;
};

inline constexpr std::uint32_t kStreamsPerLinear = 8;

// What the forward pass keeps for the backward pass.
struct LinearSaved {
  Tensor x;    // high-precision X, only if the recipe's backward needs it
  QTensor xq;  // forward-quantized X, if quantized
  QTensor wq;  // forward-quantized W, if quantized
  std::int64_t tokens = 0;

  // Bytes held per token of activations (X, quantized or not); the quantized W is a
  // per-step cost that does not grow with the batch and is reported separately.
  std::size_t activation_bytes() const;
  std::size_t weight_bytes() const { return wq.defined() ? wq.bytes : 0; }
};

// y [M, N] = x [M, K] w [N, K]^T under the recipe. w is the master weight (what quantizers
// read); w_bf16, if given, its BF16 copy, which the unquantized GEMMs read instead (the same
// values their rounding would make, without a conversion per call). Where the recipe keeps X in
// high precision, saved.x shares x's buffer: x must not change before the backward pass.
void linear_forward(Backend& backend, const Recipe& recipe, const Tensor& x, const Tensor& w, Tensor& y,
                    LinearSaved& saved, const LinearRandom& random, const Tensor& w_bf16 = Tensor{});

// dx [M, K] = dy w (overwritten); dw [N, K] += dy^T x (accumulated).
void linear_backward(Backend& backend, const Recipe& recipe, const Tensor& dy, const Tensor& w, const LinearSaved& saved,
                     Tensor& dx, Tensor& dw, const LinearRandom& random, const Tensor& w_bf16 = Tensor{});

// The rotation a recipe's backward pass uses in a given call (shared by its four operands).
Rotation backward_rotation(const Recipe& recipe, int size, const LinearRandom& random);

}  // namespace quartet

// Argument checks shared by the CPU backend's operations: each names the operation and what it
// got.
#pragma once

#include <fmt/format.h>

#include "quartet/backend/tensor.h"
#include "quartet/error.h"

namespace quartet::cpu {

inline void expect_2d(const char* what, const Tensor& t) {
  if (t.ndim() != 2) throw Error(fmt::format("{}: expected a 2-D tensor, got shape {}", what, shape_string(t.shape())));
}

inline void expect_same_shape(const char* what, const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape()) {
    throw Error(fmt::format("{}: shapes {} and {} differ", what, shape_string(a.shape()), shape_string(b.shape())));
  }
}

}  // namespace quartet::cpu

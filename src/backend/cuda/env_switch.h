// Switches between implementations of one operation by an environment variable, so that
// tests and benchmarks can compare them in one process. The value is read at every call.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string_view>

namespace quartet::cuda {

// True when `variable` is unset, empty or `usual`; false when it is `alternative`; anything else
// throws an Error naming the variable, both accepted values and what it got.
bool env_keeps_usual(const char* variable, std::string_view usual, std::string_view alternative);

// The same for more than two implementations: the index of the variable's value in `values`, 0
// when it is unset or empty; anything else throws an Error naming the variable, every accepted
// value and what it got.
int env_choice(const char* variable, std::initializer_list<std::string_view> values);

// A persistent grid's size: `blocks`, or fewer where QUARTET_CUDA_MAX_BLOCKS (a positive integer;
// unset or empty: no cap) caps it, so that tests run the grid-stride loops, and what carries across their iterations, on
// small inputs. Anything else in the variable throws an Error naming it.
std::int64_t capped_blocks(std::int64_t blocks);

}  // namespace quartet::cuda

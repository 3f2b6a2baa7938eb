// Switches between two implementations of one operation by an environment variable, so that
// tests and benchmarks can compare them in one process. The value is read at every call.
#pragma once

#include <string_view>

namespace quartet::cuda {

// True when `variable` is unset, empty or `usual`; false when it is `alternative`; anything else
// throws an Error naming the variable, both accepted values and what it got.
bool env_keeps_usual(const char* variable, std::string_view usual, std::string_view alternative);

}  // namespace quartet::cuda

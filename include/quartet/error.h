// Errors a user can read: every message names what was wrong (the file, flag, field or
// argument), what was found and what was expected.
#pragma once

#include <stdexcept>
#include <string>

namespace quartet {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// A non-finite value where the numerics need finite ones (e.g. a quantizer's input). In
// training this is a diverging step, which the trainer skips and counts, not a bug.
class NonFiniteError : public Error {
 public:
  using Error::Error;
};

}  // namespace quartet

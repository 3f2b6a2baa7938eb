// The message of the quartet::Error a callable throws, for tests that check what an error says.
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "quartet/error.h"

namespace quartet::testing {

// The message of the Error `f` throws ("" and a test failure if it throws none).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an Error";
  return "";
}

}  // namespace quartet::testing

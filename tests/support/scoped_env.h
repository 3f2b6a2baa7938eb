#pragma once

#include <cstdlib>

namespace quartet::testing {

// Sets an environment variable for its lifetime and unsets it on the way out, also when an
// ASSERT returns early or the code under test throws: a switch left set would change the tests
// after it without saying so.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) { setenv(name, value, 1); }
  ~ScopedEnv() { unsetenv(name_); }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
};

}  // namespace quartet::testing

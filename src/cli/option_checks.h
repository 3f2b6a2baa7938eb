// Checks of numeric option values, run by CLI11 on the text as given, before conversion.
// CLI11 2.1 converts integers with strtoll/strtoull and does not look at errno, so
// "99999999999999999999" would become INT64_MAX (silently clamped) and "-1" an unsigned seed of
// 2^64-1 (silently wrapped); checking the text first means nothing is ever clamped or wrapped.
// Each check is a named CLI11 validator (kValueCheck) so that config files can run the same
// check on their values and name the file and key in the error.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <string>
#include <vector>

namespace quartet::cli {

inline constexpr const char* kValueCheck = "value-check";

// A whole integer in [lo, hi] (decimal, optional sign).
CLI::Validator integer_in(std::int64_t lo, std::int64_t hi);

// A whole integer in [0, 2^64 - 1]: a seed (no sign, so "-1" is refused rather than wrapped).
CLI::Validator unsigned_integer();

// One of a few integers (e.g. a rotation size 16, 32 or 128).
CLI::Validator integer_one_of(std::initializer_list<std::int64_t> allowed);

// One of a few names (a model size, a tokenizer, a device).
CLI::Validator name_one_of(std::vector<std::string> allowed);

// A finite number greater than lo (or at least lo when inclusive).
CLI::Validator number_above(double lo, bool inclusive = false);

// A finite number between lo and hi, each end included or not (a beta is in [0, 1)).
CLI::Validator number_in(double lo, double hi, bool lo_inclusive, bool hi_inclusive);

// Runs the option's value check (if it has one) on one value; returns the complaint or "".
std::string check_option_value(CLI::Option& option, std::string value);

inline constexpr std::int64_t kMaxInt32 = std::numeric_limits<std::int32_t>::max();
inline constexpr std::int64_t kMaxInt64 = std::numeric_limits<std::int64_t>::max();

}  // namespace quartet::cli

#include "cli/option_checks.h"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <utility>
#include <optional>

namespace quartet::cli {

namespace {

// The text as a whole decimal integer, or nullopt (empty or stray characters). A magnitude
// beyond 64 bits is kept as too_large: far outside every range checked here.
struct ParsedInteger {
  bool negative = false;
  std::uint64_t magnitude = 0;
  bool too_large = false;
};

std::optional<ParsedInteger> parse_integer(const std::string& text) {
  ParsedInteger p;
  std::size_t i = 0;
  if (i < text.size() && (text[i] == '+' || text[i] == '-')) p.negative = text[i++] == '-';
  if (i == text.size()) return std::nullopt;
  for (; i < text.size(); ++i) {
    if (text[i] < '0' || text[i] > '9') return std::nullopt;
    const auto digit = static_cast<std::uint64_t>(text[i] - '0');
    if (p.magnitude > (std::numeric_limits<std::uint64_t>::max() - digit) / 10) p.too_large = true;
    if (!p.too_large) p.magnitude = p.magnitude * 10 + digit;
  }
  return p;
}

bool within(const ParsedInteger& p, std::int64_t lo, std::int64_t hi) {
  constexpr std::uint64_t kLimit = std::uint64_t{1} << 63;  // |INT64_MIN|
  if (p.too_large || p.magnitude > (p.negative ? kLimit : kLimit - 1)) return false;
  const std::int64_t v = !p.negative             ? static_cast<std::int64_t>(p.magnitude)
                         : p.magnitude == kLimit ? std::numeric_limits<std::int64_t>::min()
                                                 : -static_cast<std::int64_t>(p.magnitude);
  return v >= lo && v <= hi;
}

}  // namespace

CLI::Validator integer_in(std::int64_t lo, std::int64_t hi) {
  return CLI::Validator(
      [lo, hi](std::string& text) -> std::string {
        const std::optional<ParsedInteger> p = parse_integer(text);
        if (!p) return fmt::format("expected a whole number in [{}, {}], got '{}'", lo, hi, text);
        if (!within(*p, lo, hi)) return fmt::format("must be in [{}, {}], got {}", lo, hi, text);
        return {};
      },
      fmt::format("INT in [{}, {}]", lo, hi), kValueCheck);
}

CLI::Validator unsigned_integer() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        const std::optional<ParsedInteger> p = parse_integer(text);
        constexpr auto kMax = std::numeric_limits<std::uint64_t>::max();
        if (!p || (p->negative && p->magnitude != 0) || p->too_large) {
          return fmt::format("expected a whole number in [0, {}], got '{}'", kMax, text);
        }
        return {};
      },
      "UINT64", kValueCheck);
}

CLI::Validator integer_one_of(std::initializer_list<std::int64_t> allowed) {
  const std::vector<std::int64_t> values(allowed);
  const std::string listed = fmt::format("{}", fmt::join(values, ", "));
  return CLI::Validator(
      [values, listed](std::string& text) -> std::string {
        const std::optional<ParsedInteger> p = parse_integer(text);
        for (std::int64_t v : values) {
          if (p && within(*p, v, v)) return {};
        }
        return fmt::format("must be one of {}, got '{}'", listed, text);
      },
      fmt::format("one of {}", listed), kValueCheck);
}

CLI::Validator name_one_of(std::vector<std::string> allowed) {
  const std::string listed = fmt::format("{}", fmt::join(allowed, ", "));
  return CLI::Validator(
      [allowed, listed](std::string& text) -> std::string {
        if (std::find(allowed.begin(), allowed.end(), text) != allowed.end()) return {};
        return fmt::format("must be one of {}, got '{}'", listed, text);
      },
      fmt::format("one of {}", listed), kValueCheck);
}

namespace {

// A finite number passing `within`, described as `bound` ("greater than 0", "in [0, 1)").
CLI::Validator number_check(std::string bound, std::function<bool(double)> within, std::string description) {
  return CLI::Validator(
      [bound, within](std::string& text) -> std::string {
        errno = 0;
        char* end = nullptr;
        const double v = text.empty() ? NAN : std::strtod(text.c_str(), &end);
        if (text.empty() || end != text.c_str() + text.size() || std::isspace(static_cast<unsigned char>(text[0]))) {
          return fmt::format("expected a number {}, got '{}'", bound, text);
        }
        if (!std::isfinite(v) || errno == ERANGE) return fmt::format("must be a finite number {}, got {}", bound, text);
        if (!within(v)) return fmt::format("must be {}, got {}", bound, text);
        return {};
      },
      std::move(description), kValueCheck);
}

}  // namespace

CLI::Validator number_above(double lo, bool inclusive) {
  return number_check(fmt::format("{} {}", inclusive ? "at least" : "greater than", lo),
                      [lo, inclusive](double v) { return inclusive ? v >= lo : v > lo; },
                      inclusive ? fmt::format("NUMBER >= {}", lo) : fmt::format("NUMBER > {}", lo));
}

CLI::Validator number_in(double lo, double hi, bool lo_inclusive, bool hi_inclusive) {
  const std::string range = fmt::format("{}{}, {}{}", lo_inclusive ? "[" : "(", lo, hi, hi_inclusive ? "]" : ")");
  return number_check(
      "in " + range,
      [=](double v) { return (lo_inclusive ? v >= lo : v > lo) && (hi_inclusive ? v <= hi : v < hi); },
      "NUMBER in " + range);
}

std::string check_option_value(CLI::Option& option, std::string value) {
  for (int i = 0;; ++i) {
    CLI::Validator* v = nullptr;
    try {
      v = option.get_validator(i);
    } catch (const CLI::OptionNotFound&) {
      return {};
    }
    if (v->get_name() != kValueCheck) continue;
    return (*v)(value);
  }
}

}  // namespace quartet::cli

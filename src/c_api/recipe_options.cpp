#include "c_api/recipe_options.h"

#include <fmt/format.h>

#include <charconv>
#include <cmath>
#include <set>

#include "quartet/error.h"
#include "quartet/numerics/quantizer.h"

namespace quartet::c_api {

namespace {

bool parse_bool(const std::string& name, const std::string& value) {
  if (value == "true" || value == "1") return true;
  if (value == "false" || value == "0") return false;
  throw Error(fmt::format("recipe option {}: expected true or false, got '{}'", name, value));
}

int parse_int(const std::string& name, const std::string& value) {
  int v = 0;
  const char* end = value.data() + value.size();
  const auto [ptr, ec] = std::from_chars(value.data(), end, v);
  if (value.empty() || ec != std::errc{} || ptr != end) {
    throw Error(fmt::format("recipe option {}: expected an integer, got '{}'", name, value));
  }
  return v;
}

double parse_number(const std::string& name, const std::string& value) {
  double v = 0;
  const char* end = value.data() + value.size();
  const auto [ptr, ec] = std::from_chars(value.data(), end, v);
  if (value.empty() || ec != std::errc{} || ptr != end || !std::isfinite(v)) {
    throw Error(fmt::format("recipe option {}: expected a finite number, got '{}'", name, value));
  }
  return v;
}

}  // namespace

const std::vector<std::string>& recipe_option_names() {
  static const std::vector<std::string> names = {"quantize_forward",  "quantize_backward", "four_over_six",
                                                 "backward_rotation", "eden_group",        "forward_clip",
                                                 "backward_headroom", "backward_clip",     "backward_quantizer"};
  return names;
}

RecipeOptions parse_recipe_options(const std::vector<std::pair<std::string, std::string>>& options) {
  RecipeOptions o;
  std::set<std::string> seen;
  for (const auto& [name, value] : options) {
    if (!seen.insert(name).second) throw Error(fmt::format("recipe option {} is given twice", name));
    if (name == "quantize_forward") {
      o.quantize_forward = parse_bool(name, value);
    } else if (name == "quantize_backward") {
      o.quantize_backward = parse_bool(name, value);
    } else if (name == "four_over_six") {
      o.four_over_six = parse_bool(name, value);
    } else if (name == "backward_rotation") {
      o.backward_rotation = parse_int(name, value);
    } else if (name == "eden_group") {
      o.eden_group = parse_int(name, value);
    } else if (name == "forward_clip") {
      o.forward_clip = parse_number(name, value);
    } else if (name == "backward_headroom") {
      o.backward_headroom = parse_number(name, value);
    } else if (name == "backward_clip") {
      o.backward_clip = parse_number(name, value);
    } else if (name == "backward_quantizer") {
      o.backward_quantizer = parse_quantizer(value);
    } else {
      throw Error(fmt::format("unknown recipe option '{}'; expected one of: {}", name, fmt::join(recipe_option_names(), ", ")));
    }
  }
  return o;
}

}  // namespace quartet::c_api

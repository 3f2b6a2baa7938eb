// A number for a JSON report: JSON has no NaN or infinity, so a value that is not finite (a
// diverged loss, an undefined slope) is written as null.
#pragma once

#include <cmath>

#include <nlohmann/json.hpp>

namespace quartet {

template <class Json = nlohmann::json>
Json number_or_null(double v) {
  return std::isfinite(v) ? Json(v) : Json();
}

}  // namespace quartet

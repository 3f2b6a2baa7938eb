// Recipe options given to the C interface as name/value strings (the spelling a binding's
// keyword arguments use), parsed into RecipeOptions with an error for anything malformed.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "quartet/nn/recipe.h"

namespace quartet::c_api {

// The names parse_recipe_options accepts, in the order the documentation lists them.
const std::vector<std::string>& recipe_option_names();

// Throws Error naming the option and the value for an unknown name, a malformed value or a
// name given twice. Whether the recipe can use an option is make_recipe's check.
RecipeOptions parse_recipe_options(const std::vector<std::pair<std::string, std::string>>& options);

}  // namespace quartet::c_api

// This process's command line as it was started (argv[1..]), for launchers that start copies of
// the program (`train --gpus N`, `bench --gpus N`): each rank gets the same arguments.
#pragma once

#include <string>
#include <vector>

namespace quartet::cli {

std::vector<std::string> own_arguments();

}  // namespace quartet::cli

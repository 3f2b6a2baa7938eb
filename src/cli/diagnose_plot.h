// The picture of `quartet diagnose` (docs/diagnostics.md): each recipe's bias, averaged over the
// layers measured, against the number of draws averaged, on log-log axes, one panel per backward
// product, with the 1/sqrt(k) line an unbiased estimator follows.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "quartet/train/diagnose.h"

namespace quartet::cli {

// Draws `means` into `png`, the gnuplot script (with the data inline) beside it; `subtitle` goes
// under the title. Throws Error when gnuplot fails; the caller checks that it is installed.
void plot_diagnose(const std::vector<MeanEstimator>& means, const std::string& subtitle,
                   const std::filesystem::path& png);

}  // namespace quartet::cli

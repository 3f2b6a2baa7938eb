// `quartet train --json`: the one JSON object printed on stdout at the end of a run, so that a
// script gets the outcome without parsing the human output (docs/run-tracking.md).
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "quartet/train/trainer.h"

namespace quartet::cli {

// What the summary needs beyond the TrainResult: the command knows these.
struct SummaryContext {
  std::string commit;
  std::string out_dir;       // empty: no --out
  std::int64_t total_steps = 0;
  bool sample_requested = false;
  std::string sample;
};

// The summary object. Numbers that are not finite (a diverged loss) become null, as the JSON
// library writes them; so does what the run does not have (no evaluation, no --out, no sample).
nlohmann::json train_summary(const TrainResult& result, const SummaryContext& context);

}  // namespace quartet::cli

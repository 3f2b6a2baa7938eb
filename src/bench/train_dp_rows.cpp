// The rows and checks of the N-GPU training benchmark (train_dp.h): plain arithmetic, built and
// tested without a GPU.
#include <fmt/format.h>

#include <cmath>

#include "bench/train_dp.h"
#include "quartet/error.h"

namespace quartet {

nlohmann::json DataParallelMeasurement::to_json() const {
  return {{"model", model},
          {"recipe", recipe},
          {"gpus", gpus},
          {"tokens_per_s_per_gpu", tokens_per_s_per_gpu},
          {"ms_per_step", ms_per_step},
          {"peak_gib", peak_gib},
          {"last_loss", last_loss},
          {"optimizer_bytes_per_rank", optimizer_bytes_per_rank},
          {"optimizer_bytes_unsharded", optimizer_bytes_unsharded}};
}

DataParallelMeasurement DataParallelMeasurement::from_json(const nlohmann::json& j) {
  DataParallelMeasurement m;
  const auto field = [&](const char* name, auto& into) {
    if (!j.is_object() || !j.contains(name)) throw Error(fmt::format("bench: a rank's measurement lacks \"{}\"", name));
    try {
      j.at(name).get_to(into);
    } catch (const nlohmann::json::exception&) {
      throw Error(fmt::format("bench: a rank's measurement has \"{}\": {}, of the wrong type", name, j.at(name).dump()));
    }
  };
  field("model", m.model);
  field("recipe", m.recipe);
  field("gpus", m.gpus);
  field("tokens_per_s_per_gpu", m.tokens_per_s_per_gpu);
  field("ms_per_step", m.ms_per_step);
  field("peak_gib", m.peak_gib);
  field("last_loss", m.last_loss);
  field("optimizer_bytes_per_rank", m.optimizer_bytes_per_rank);
  field("optimizer_bytes_unsharded", m.optimizer_bytes_unsharded);
  return m;
}

nlohmann::json data_parallel_row(const DataParallelMeasurement& m, double one_gpu_tokens_per_s) {
  if (m.gpus < 1) throw Error(fmt::format("bench: train-dp/{}/{}: a measurement on {} GPUs", m.recipe, m.model, m.gpus));
  if (!(one_gpu_tokens_per_s > 0) || !std::isfinite(one_gpu_tokens_per_s)) {
    throw Error(fmt::format("bench: train-dp/{}/{}: the one-GPU throughput {} is no baseline", m.recipe, m.model,
                            one_gpu_tokens_per_s));
  }
  if (m.optimizer_bytes_unsharded <= 0) {
    throw Error(fmt::format("bench: train-dp/{}/{}: unsharded optimizer bytes {}", m.recipe, m.model,
                            m.optimizer_bytes_unsharded));
  }
  const double fraction =
      static_cast<double>(m.optimizer_bytes_per_rank) / static_cast<double>(m.optimizer_bytes_unsharded);
  const double fraction_target = 1.05 / m.gpus;
  nlohmann::json row = {{"case", fmt::format("train-dp/{}/{}/gpus{}", m.recipe, m.model, m.gpus)},
                        {"gpus", m.gpus},
                        {"tokens_per_s", m.tokens_per_s_per_gpu * m.gpus},
                        {"tokens_per_s_per_gpu", m.tokens_per_s_per_gpu},
                        {"one_gpu_tokens_per_s", one_gpu_tokens_per_s},
                        {"scaling_efficiency", m.tokens_per_s_per_gpu / one_gpu_tokens_per_s},
                        {"optimizer_bytes_per_rank", m.optimizer_bytes_per_rank},
                        {"optimizer_bytes_unsharded", m.optimizer_bytes_unsharded},
                        {"optimizer_fraction", fraction},
                        {"optimizer_fraction_target", fraction_target},
                        {"meets_optimizer_target", fraction <= fraction_target},
                        {"ms_per_step", m.ms_per_step},
                        {"peak_gib", m.peak_gib},
                        {"last_loss", m.last_loss}};
  if (m.model == "1b" && m.gpus == 8) {  // the scaling target
    row["scaling_target"] = 0.9;
    row["meets_scaling_target"] = row["scaling_efficiency"].get<double>() >= 0.9;
  }
  return row;
}

void check_data_parallel_bench(std::int64_t gpus, const std::vector<std::string>& only, const std::string& pytorch) {
  if (gpus < 1) throw Error(fmt::format("--gpus must be 1 or more, got {}", gpus));
  if (only.size() != 1 || only[0] != "train") {
    throw Error("--gpus runs the training cases on several GPUs: give --only train (the other sections use one GPU)");
  }
  if (!pytorch.empty()) throw Error("--pytorch is a one-GPU reference: run it without --gpus");
}

}  // namespace quartet

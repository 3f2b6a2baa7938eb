// The rows of `quartet bench --only train --gpus N` and its argument checks (bench/train_dp.h),
// without a GPU: the arithmetic of scaling efficiency and optimizer memory, the targets, the
// measurements' round trip through the file rank 0 writes, and the errors.
#include <gtest/gtest.h>

#include "bench/train_dp.h"
#include "quartet/error.h"

namespace quartet {
namespace {

DataParallelMeasurement measured(const std::string& model, int gpus, double per_gpu, std::int64_t per_rank) {
  DataParallelMeasurement m;
  m.model = model;
  m.recipe = "quartet2";
  m.gpus = gpus;
  m.tokens_per_s_per_gpu = per_gpu;
  m.ms_per_step = 123.5;
  m.peak_gib = 40.25;
  m.last_loss = 10.75;
  m.optimizer_bytes_per_rank = per_rank;
  m.optimizer_bytes_unsharded = 8000;
  return m;
}

TEST(TrainDataParallelBench, RowComparesPerGpuThroughputAndOptimizerMemoryWithOneGpu) {
  const nlohmann::json row = data_parallel_row(measured("124m", 4, 900.0, 2000), 1000.0);
  EXPECT_EQ(row.at("case"), "train-dp/quartet2/124m/gpus4");
  EXPECT_EQ(row.at("gpus"), 4);
  EXPECT_DOUBLE_EQ(row.at("tokens_per_s").get<double>(), 3600.0);
  EXPECT_DOUBLE_EQ(row.at("tokens_per_s_per_gpu").get<double>(), 900.0);
  EXPECT_DOUBLE_EQ(row.at("one_gpu_tokens_per_s").get<double>(), 1000.0);
  EXPECT_DOUBLE_EQ(row.at("scaling_efficiency").get<double>(), 0.9);
  EXPECT_DOUBLE_EQ(row.at("optimizer_fraction").get<double>(), 0.25);
  EXPECT_DOUBLE_EQ(row.at("optimizer_fraction_target").get<double>(), 1.05 / 4);
  EXPECT_TRUE(row.at("meets_optimizer_target").get<bool>());
  EXPECT_DOUBLE_EQ(row.at("ms_per_step").get<double>(), 123.5);
  EXPECT_FALSE(row.contains("scaling_target")) << "only the 1b case at 8 GPUs has the issue's target";
  // 1/N + 6%: over the target.
  EXPECT_FALSE(data_parallel_row(measured("124m", 4, 900.0, 2120), 1000.0).at("meets_optimizer_target").get<bool>());
}

TEST(TrainDataParallelBench, TheOneBillionCaseAtEightGpusCarriesTheScalingTarget) {
  const nlohmann::json met = data_parallel_row(measured("1b", 8, 905.0, 1000), 1000.0);
  EXPECT_EQ(met.at("case"), "train-dp/quartet2/1b/gpus8");
  EXPECT_DOUBLE_EQ(met.at("scaling_target").get<double>(), 0.9);
  EXPECT_TRUE(met.at("meets_scaling_target").get<bool>());
  EXPECT_FALSE(data_parallel_row(measured("1b", 8, 850.0, 1000), 1000.0).at("meets_scaling_target").get<bool>());
}

TEST(TrainDataParallelBench, BadBaselinesAreRefused) {
  for (const double one : {0.0, -1.0, double(NAN)}) {
    try {
      data_parallel_row(measured("124m", 2, 900.0, 4000), one);
      ADD_FAILURE() << "accepted a one-GPU throughput of " << one;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("train-dp/quartet2/124m: the one-GPU throughput"), std::string::npos)
          << e.what();
    }
  }
  EXPECT_THROW(data_parallel_row(measured("124m", 0, 900.0, 4000), 1000.0), Error);
  DataParallelMeasurement no_state = measured("124m", 2, 900.0, 4000);
  no_state.optimizer_bytes_unsharded = 0;
  EXPECT_THROW(data_parallel_row(no_state, 1000.0), Error);
}

TEST(TrainDataParallelBench, MeasurementsTravelThroughJsonUnchanged) {
  const DataParallelMeasurement m = measured("1b", 8, 1234.5, 777);
  const DataParallelMeasurement back = DataParallelMeasurement::from_json(nlohmann::json::parse(m.to_json().dump()));
  EXPECT_EQ(back.to_json(), m.to_json());
  nlohmann::json missing = m.to_json();
  missing.erase("optimizer_bytes_per_rank");
  try {
    DataParallelMeasurement::from_json(missing);
    ADD_FAILURE() << "a measurement without optimizer_bytes_per_rank was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("lacks \"optimizer_bytes_per_rank\""), std::string::npos) << e.what();
  }
  nlohmann::json mistyped = m.to_json();
  mistyped["gpus"] = "eight";
  EXPECT_THROW(DataParallelMeasurement::from_json(mistyped), Error);
}

TEST(TrainDataParallelBench, ArgumentChecksSayWhatToChange) {
  EXPECT_NO_THROW(check_data_parallel_bench(8, {"train"}, ""));
  const auto message = [](std::int64_t gpus, const std::vector<std::string>& only, const std::string& pytorch) {
    try {
      check_data_parallel_bench(gpus, only, pytorch);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  EXPECT_EQ(message(0, {"train"}, ""), "--gpus must be 1 or more, got 0");
  EXPECT_NE(message(2, {}, "").find("give --only train"), std::string::npos);
  EXPECT_NE(message(2, {"train", "gemm"}, "").find("give --only train"), std::string::npos);
  EXPECT_NE(message(2, {"train"}, "bench/pytorch_reference.py").find("run it without --gpus"), std::string::npos);
}

}  // namespace
}  // namespace quartet

// The end-to-end training benchmark (train_bench.h). Our rows time TrainStep exactly as
// `quartet train` runs it (random GPT-2 token ids instead of a corpus: the data path is a
// host-side copy that the step does not wait for). The PyTorch rows come from its script, run as
// a child process (run_program: argv, no shell) after this process has returned its pooled GPU
// memory.
#include "bench/train_bench.h"
#include "bench/train_dp.h"
#include "bench/device_timeline.h"

#include <cuda_runtime_api.h>
#include <fmt/format.h>

#include <chrono>
#include <filesystem>
#include <optional>
#include <random>

#include "quartet/backend/cuda.h"
#include "quartet/error.h"
#include "quartet/dist/rendezvous.h"
#include "quartet/dist/sharding.h"
#include "quartet/train/devices.h"
#include "quartet/train/optimizer.h"
#include "quartet/train/sharded_optimizer.h"
#include "quartet/train/train_step.h"
#include "quartet/util/files.h"
#include "quartet/util/process.h"

namespace quartet {

namespace {

constexpr std::int64_t kGpt2Vocab = 50257;

// The dense BF16 tensor-core peak MFU is quoted against, from the device's name.
double peak_bf16_flops(const std::string& device) {
  if (device.find("H100") != std::string::npos && device.find("PCIe") != std::string::npos) return 756e12;
  if (device.find("H100") != std::string::npos || device.find("H200") != std::string::npos) return 989.4e12;
  if (device.find("B200") != std::string::npos) return 2250e12;
  return 0;  // unknown: MFU is not reported
}

cudaMemPool_t default_pool() {
  int device = 0;
  cudaMemPool_t pool = nullptr;
  if (cudaGetDevice(&device) != cudaSuccess || cudaDeviceGetDefaultMemPool(&pool, device) != cudaSuccess) {
    throw Error("bench: cannot reach the GPU's memory pool");
  }
  return pool;
}

void reset_peak_memory() {
  cudaDeviceSynchronize();
  std::uint64_t zero = 0;
  cudaMemPoolSetAttribute(default_pool(), cudaMemPoolAttrUsedMemHigh, &zero);
}

double peak_memory_gib() {
  cudaDeviceSynchronize();
  std::uint64_t high = 0;
  cudaMemPoolGetAttribute(default_pool(), cudaMemPoolAttrUsedMemHigh, &high);
  return static_cast<double>(high) / static_cast<double>(1ull << 30);
}

// Random GPT-2 ids, and targets that are the inputs shifted by one (as the loader makes them).
std::vector<Batch> random_batches(int count, std::int64_t tokens, std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::uniform_int_distribution<std::int32_t> id(0, kGpt2Vocab - 1);
  std::vector<Batch> out(static_cast<std::size_t>(count));
  for (Batch& b : out) {
    std::vector<std::int32_t> stream(static_cast<std::size_t>(tokens + 1));
    for (std::int32_t& t : stream) t = id(gen);
    b.inputs.assign(stream.begin(), stream.end() - 1);
    b.targets.assign(stream.begin() + 1, stream.end());
  }
  return out;
}

struct Measured {
  double tokens_per_s = 0, ms_per_step = 0, peak_gib = 0, last_loss = 0;
  // TrainStep::launch on the host: queueing the step's work, and with a step in flight also
  // waiting for the upload buffers that step still uses.
  double host_ms_per_step = 0;
  nlohmann::json op_ms;         // device ms per step and operation (QUARTET_PROFILE_OPS=1 only)
  nlohmann::json op_host_ms;    // host ms per step and operation, the same way
  nlohmann::json timeline;      // device_timeline.h's summary of the traced steps (trace_dir only)
};

// The preset at the shape's sequence length, checked to fit the recipe.
LlamaConfig bench_model_config(const std::string& model_name, const Recipe& recipe, const TrainBenchShape& shape) {
  LlamaConfig config = llama_preset(model_name, kGpt2Vocab);
  config.max_seq_len = std::max(config.max_seq_len, shape.seq);
  check_recipe_fits(config, recipe, shape.batch * shape.seq);
  return config;
}

// Records the GPU's activity while `run` runs training steps; writes the Chrome trace and
// returns the timeline's summary.
template <class Run>
nlohmann::json trace_steps(const std::string& recipe_name, const std::string& model_name, const Run& run,
                           const std::string& trace_dir) {
  cuda_activity_start();
  try {
    run();
  } catch (...) {
    try {
      cuda_activity_stop();  // the next case's recording must be able to start
    } catch (const Error&) {
    }
    throw;
  }
  const std::vector<DeviceActivity> activities = cuda_activity_stop();
  // The first step recorded starts late (by 5 ms on an H100): the recorder's start delays its
  // first activity. Its idle time would be the recorder's.
  nlohmann::json timeline = timeline_summary_json(summarize_timeline(activities, "adamw_kernel", 1), 25);
  const std::filesystem::path file =
      std::filesystem::path(trace_dir) / fmt::format("{}-{}.trace.json", recipe_name, model_name);
  write_file_atomic(file, chrome_trace(activities).dump() + "\n");
  timeline["trace_file"] = file.string();
  return timeline;
}

Measured measure_recipe(const std::string& model_name, const std::string& recipe_name, const TrainBenchShape& shape,
                        int warmup, int steps, const std::string& trace_dir) {
  auto backend = make_cuda_backend();
  const Recipe recipe = make_recipe(recipe_name);
  const LlamaConfig config = bench_model_config(model_name, recipe, shape);
  reset_peak_memory();
  LlamaModel model(*backend, config, recipe, 1);
  AdamW optimizer(*backend, model);
  TrainStep step(*backend, model, optimizer, shape.batch, shape.seq);
  const std::vector<Batch> batches = random_batches(2, shape.batch * shape.seq, 7);
  const double grad_scale = 1.0 / static_cast<double>(shape.batch * shape.seq);
  Measured m;
  double host_seconds = 0;
  const auto launch = [&](int i) {
    AdamWStep hyper;
    hyper.lr = 3e-4;
    hyper.weight_decay = 0.1;
    hyper.step = i + 1;
    const auto queued = std::chrono::steady_clock::now();
    step.launch(i, {batches[static_cast<std::size_t>(i % 2)]}, grad_scale, hyper);
    host_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - queued).count();
  };
  const auto finish = [&] { m.last_loss = step.finish().loss_sum * grad_scale; };
  // Steps first .. first + count - 1 as `quartet train` runs them: the next step queued before
  // the last one's outcome is read.
  const auto run_overlapped = [&](int first, int count) {
    launch(first);
    for (int i = first + 1; i < first + count; ++i) {
      launch(i);
      finish();
    }
    finish();
  };
  for (int i = 0; i < warmup; ++i) {
    launch(i);
    finish();
  }
  cuda_op_profile(true);  // the timed steps only
  host_seconds = 0;
  const auto start = std::chrono::steady_clock::now();
  run_overlapped(warmup, steps);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  m.ms_per_step = seconds * 1e3 / steps;
  m.host_ms_per_step = host_seconds * 1e3 / steps;
  m.tokens_per_s = static_cast<double>(shape.batch * shape.seq * steps) / seconds;
  m.op_ms = nlohmann::json::object();
  m.op_host_ms = nlohmann::json::object();
  for (const CudaOpTime& t : cuda_op_profile(true)) {
    m.op_ms[t.op] = t.ms / steps;
    m.op_host_ms[t.op] = t.host_ms / steps;
  }
  m.peak_gib = peak_memory_gib();
  if (!trace_dir.empty()) {
    // A case whose recording fails keeps its timed figures: the row says why it has no timeline.
    try {
      m.timeline = trace_steps(recipe_name, model_name, [&] { run_overlapped(warmup + steps, 1 + kTraceSteps); }, trace_dir);
    } catch (const Error& e) {
      m.timeline = {{"error", e.what()}};
    }
  }
  return m;
}

// One case on every rank of a data-parallel run: the trainer's sharded step (reduce of the
// gradients, the sharded AdamW, all-gather of the parameters), each rank running one
// micro-batch of `shape` per step (its own random tokens) with the step's random bits drawn as
// in `quartet train`. The ranks start the timed steps together (a barrier); rank 0's time is
// reported (a step ends with collectives: every rank's steps take the same time).
std::optional<DataParallelMeasurement> measure_data_parallel(const std::string& model_name,
                                                             const std::string& recipe_name,
                                                             const TrainBenchShape& shape, int warmup, int steps,
                                                             const DistEnvironment& env) {
  std::unique_ptr<Rendezvous> rendezvous = Rendezvous::connect(env, dist_timeout_seconds());
  auto backend = make_cuda_backend();
  const Recipe recipe = make_recipe(recipe_name);
  const LlamaConfig config = bench_model_config(model_name, recipe, shape);
  reset_peak_memory();
  LlamaModel model(*backend, config, recipe, 1, env.world_size * FlatParameters::kSegmentAlignment);
  std::unique_ptr<Communicator> comm = make_communicator(*backend, std::move(rendezvous));
  ShardedAdamW optimizer(*backend, model, *comm);
  TrainStep step(*backend, model, optimizer, shape.batch, shape.seq);
  const std::vector<Batch> batches = random_batches(2, shape.batch * shape.seq, 7 + static_cast<std::uint64_t>(env.rank));
  const double grad_scale = 1.0 / static_cast<double>(shape.batch * shape.seq * env.world_size);
  double last_loss = 0;
  const auto run = [&](int i) {
    AdamWStep hyper;
    hyper.lr = 3e-4;
    hyper.weight_decay = 0.1;
    hyper.step = i + 1;
    step.launch(i, {batches[static_cast<std::size_t>(i % 2)]}, grad_scale, hyper, nullptr, env.rank, env.world_size);
    last_loss = step.finish().loss_sum * grad_scale;
  };
  for (int i = 0; i < warmup; ++i) run(i);
  comm->barrier();
  const auto start = std::chrono::steady_clock::now();
  for (int i = warmup; i < warmup + steps; ++i) run(i);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  DataParallelMeasurement m;
  m.model = model_name;
  m.recipe = recipe_name;
  m.gpus = env.world_size;
  m.ms_per_step = seconds * 1e3 / steps;
  m.tokens_per_s_per_gpu = static_cast<double>(shape.batch * shape.seq * steps) / seconds;
  m.peak_gib = peak_memory_gib();
  m.last_loss = last_loss;
  m.optimizer_bytes_per_rank = static_cast<std::int64_t>(optimizer.state_bytes());
  // What one GPU's AdamW keeps: both FP32 moments over the flat buffer (this run's padding for
  // N shards, at most 64 N elements, is counted in too).
  m.optimizer_bytes_unsharded = 2 * static_cast<std::int64_t>(model.flat().values.bytes());
  comm->finish();
  if (env.rank != 0) return std::nullopt;
  return m;
}

}  // namespace

std::vector<DataParallelMeasurement> run_train_dp_rank(const TrainBenchOptions& o, const DistEnvironment& env) {
  select_device_for_rank("cuda", env.local_rank);
  if (!cuda_available()) throw Error("bench: " + cuda_device_description());
  const int warmup = o.quick ? 1 : 3, steps = o.quick ? 2 : 10;
  std::vector<DataParallelMeasurement> out;
  for (const std::string& model : o.models) {
    for (const std::string& recipe : o.recipes) {
      // A rendezvous per case: the ranks' GPU memory is returned between cases.
      DistEnvironment case_env = env;
      std::optional<DataParallelMeasurement> m =
          measure_data_parallel(model, recipe, train_bench_shape(model), warmup, steps, case_env);
      if (m) out.push_back(*m);
    }
  }
  return out;
}

TrainBenchShape train_bench_shape(const std::string& model) {
  if (model == "1b") return {8, 2048};
  return {8, 1024};
}

double training_flops_per_token(std::int64_t parameters, std::int64_t layers, std::int64_t d_model, std::int64_t seq) {
  return 6.0 * static_cast<double>(parameters) + 6.0 * static_cast<double>(layers * d_model * seq);
}

nlohmann::json run_train_benchmarks(const TrainBenchOptions& o, const std::function<void(const nlohmann::json&)>& note) {
  if (!cuda_available()) throw Error("bench: " + cuda_device_description());
  const std::string device = cuda_device_description();
  const double peak = peak_bf16_flops(device);
  const int warmup = o.quick ? 1 : 3, steps = o.quick ? 2 : 10;
  nlohmann::json rows = nlohmann::json::array();
  const auto emit = [&](nlohmann::json row) {
    rows.push_back(row);
    note(row);
  };
  for (const std::string& model : o.models) {
    const TrainBenchShape shape = train_bench_shape(model);
    LlamaConfig config = llama_preset(model, kGpt2Vocab);
    const double flops = training_flops_per_token(config.total_parameters(), config.n_layers, config.d_model, shape.seq);
    double pytorch_tps = 0, bf16_tps = 0, bf16_peak = 0;
    if (!o.pytorch_script.empty()) {
      cudaMemPoolTrimTo(default_pool(), 0);  // the child needs the memory this process keeps pooled
      const std::vector<std::string> argv = {o.python,  o.pytorch_script, "--model", model, "--batch",
                                             std::to_string(shape.batch), "--seq", std::to_string(shape.seq),
                                             "--steps", o.quick ? "3" : "30", "--json", "-"};
      const ProgramResult run = run_program(argv, {}, /*merge_stderr=*/false);  // its messages go to our stderr
      if (run.exit_code != 0) {
        throw Error(fmt::format("bench: the PyTorch reference ({}) failed with status {} (its message is above)",
                                fmt::join(argv, " "), run.exit_code));
      }
      const std::string& out = run.output;
      nlohmann::json row;
      try {
        row = nlohmann::json::parse(out);
      } catch (const nlohmann::json::exception& e) {
        throw Error(fmt::format("bench: the PyTorch reference printed no JSON result ({})", e.what()));
      }
      pytorch_tps = row.at("tokens_per_s").get<double>();
      emit(row);
    }
    for (const std::string& recipe : o.recipes) {
      const Measured m = measure_recipe(model, recipe, shape, warmup, steps, o.trace_dir);
      nlohmann::json row = {{"case", fmt::format("train/{}/{}", recipe, model)},
                            {"tokens_per_s", m.tokens_per_s},
                            {"ms_per_step", m.ms_per_step},
                            {"peak_gib", m.peak_gib},
                            {"flops_per_token", flops},
                            {"batch", shape.batch},
                            {"seq", shape.seq},
                            {"steps", steps},
                            {"warmup", warmup},
                            {"parameters", config.total_parameters()},
                            {"last_loss", m.last_loss},
                            {"host_ms_per_step", m.host_ms_per_step}};
      if (!m.timeline.empty()) row["device_timeline"] = m.timeline;
      if (!m.op_ms.empty()) {
        row["device_ms_per_step_by_op"] = m.op_ms;
        row["host_ms_per_step_by_op"] = m.op_host_ms;
      }
      if (peak > 0) {
        row["mfu"] = m.tokens_per_s * flops / peak;
        row["peak_tflops"] = peak / 1e12;
      }
      if (recipe == "bf16") {
        bf16_tps = m.tokens_per_s;
        bf16_peak = m.peak_gib;
      } else if (bf16_tps > 0) {
        row["ratio_to_bf16"] = m.tokens_per_s / bf16_tps;
        row["peak_ratio_to_bf16"] = m.peak_gib / bf16_peak;
      }
      if (pytorch_tps > 0) row["ratio_to_pytorch"] = m.tokens_per_s / pytorch_tps;
      emit(row);
    }
  }
  return rows;
}

}  // namespace quartet

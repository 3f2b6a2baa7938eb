#include "quartet/train/trainer.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <functional>
#include <memory>
#include <regex>
#include <sstream>

#include "quartet/data/dataset.h"
#include "quartet/error.h"
#include "quartet/train/batch_prefetcher.h"
#include "quartet/train/checkpoint.h"
#include "quartet/train/initial_weights.h"
#include "quartet/train/devices.h"
#include "quartet/train/diagnostics.h"
#include "quartet/train/evaluation.h"
#include "quartet/train/optimizer.h"
#include "quartet/train/run_tracking.h"
#include "quartet/train/sharded_optimizer.h"
#include "quartet/dist/rendezvous.h"
#include "quartet/dist/sharding.h"
#include "quartet/train/train_step.h"
#include "quartet/util/files.h"

namespace quartet {

nlohmann::json StepMetrics::to_json() const {
  nlohmann::json j = {{"step", step},     {"tokens", tokens},        {"loss", loss},
                      {"lr", lr},         {"grad_norm", grad_norm},  {"tokens_per_s", tokens_per_second},
                      {"skipped", skipped}, {"time", unix_time}, {"elapsed_s", elapsed_seconds},
                      {"commit", commit.empty() ? std::string("unknown") : commit}};
  if (was_skipped) j["skipped_this_step"] = true;
  if (val_loss) j["val_loss"] = *val_loss;
  if (val_bpb) j["val_bpb"] = *val_bpb;
  return j;
}

// ---- the loop -----------------------------------------------------------------------------

namespace {

// Keeps metrics.jsonl lines of steps <= step (a resumed run rewrites what came after).
void truncate_metrics(const std::filesystem::path& path, std::int64_t step) {
  if (!std::filesystem::exists(path)) return;
  std::istringstream in(read_file(path));
  std::string line, kept;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    try {
      if (nlohmann::json::parse(line).at("step").get<std::int64_t>() <= step) kept += line + "\n";
    } catch (const nlohmann::json::exception&) {
      break;  // a torn last line from a crash
    }
  }
  write_file_atomic(path, kept);
}

// FNV-1a over the training stream: a resumed run must see exactly the same data.
std::string data_fingerprint(const std::vector<std::uint16_t>& tokens) {
  std::uint64_t h = 1469598103934665603ull;
  for (std::uint16_t t : tokens) {
    h = (h ^ (t & 0xFFu)) * 1099511628211ull;
    h = (h ^ (t >> 8)) * 1099511628211ull;
  }
  return fmt::format("{}:{:016x}", tokens.size(), h);
}

// A run resumed in its own folder from a checkpoint older than the run's latest would write
// its next checkpoints over the later ones, which may come from another schedule. Refused unless
// --force, which rewinds the run: the later checkpoints are removed (the metrics after the step
// are dropped by truncate_metrics) and `latest` names the checkpoint resumed from.
void rewind_later_checkpoints(const std::string& run_dir, const std::filesystem::path& checkpoint, std::int64_t step,
                              const RunControl& control, const std::function<void(const std::string&)>& log) {
  std::vector<std::filesystem::path> later;
  for (const auto& [s, path] : checkpoint_folders(run_dir)) {
    if (s > static_cast<std::uint64_t>(step)) later.push_back(path);
  }
  if (later.empty()) return;
  // Resumed from the checkpoint `latest` names, the later folders are a save that an
  // interruption cut off before it moved `latest` (checkpoint.h): the same schedule, whose
  // steps this run writes again, bit for bit.
  try {
    if (std::filesystem::equivalent(resolve_checkpoint(run_dir), checkpoint)) return;
  } catch (const Error&) {
    // no valid `latest`: the checkpoint was named explicitly
  }
  if (!control.replace_existing_run) {
    throw Error(fmt::format("--resume {} is at step {}, but {} holds {} later checkpoint(s), up to {}; going on from "
                            "here would replace them. Resume from the run folder (its latest checkpoint), or add "
                            "--force to rewind the run to step {} (its later checkpoints and metrics are removed)",
                            checkpoint.string(), step, run_dir, later.size(), later.back().filename().string(), step));
  }
  for (const std::filesystem::path& p : later) std::filesystem::remove_all(p);
  write_file_atomic(std::filesystem::path(run_dir) / "checkpoints" / "latest", checkpoint.filename().string() + "\n");
  log(fmt::format("--force: rewound the run to step {}: removed {} later checkpoint(s), up to {}", step, later.size(),
                  later.back().filename().string()));
}

bool holds_a_run(const std::filesystem::path& dir) {
  return std::filesystem::exists(std::filesystem::symlink_status(dir / "metrics.jsonl")) ||
         std::filesystem::exists(std::filesystem::symlink_status(dir / "checkpoints"));
}

// Removes an old run's files before a new run is written into its folder (--force): `latest`
// first, so an interruption never leaves it naming a half-removed checkpoint. Only what a run
// writes is removed; anything else in the folder stays.
void remove_old_run(const std::filesystem::path& dir, const std::function<void(const std::string&)>& log) {
  static const std::regex checkpoint_name(R"(step-[0-9]+)");
  const std::filesystem::path root = dir / "checkpoints";
  std::error_code ec;
  if (std::filesystem::is_directory(std::filesystem::symlink_status(root))) {
    std::filesystem::remove(root / "latest");
    std::int64_t removed = 0;
    for (const auto& e : std::filesystem::directory_iterator(root)) {
      if (std::regex_match(e.path().filename().string(), checkpoint_name)) {
        std::filesystem::remove_all(e.path());
        ++removed;
      }
    }
    remove_stale_temporaries(root);
    log(fmt::format("--force: removed {} checkpoints of the run that was in {}", removed, dir.string()));
  }
  std::filesystem::remove(dir / "metrics.jsonl", ec);
  // What `quartet train` writes when a run ends (its record and plot): left behind, they would
  // describe the old run beside the new one's metrics until the new one ends, or for good if
  // it fails.
  for (const char* name : {"run.json", "training.png", "training.gnuplot"}) std::filesystem::remove(dir / name, ec);
  // The old run's TensorBoard events would be drawn as part of the new run.
  const std::filesystem::path events = tensorboard_folder(dir);
  if (std::filesystem::is_directory(std::filesystem::symlink_status(events))) {
    std::int64_t removed = 0;
    for (const auto& e : std::filesystem::directory_iterator(events)) {
      if (e.path().filename().string().rfind(kEventsFilePrefix, 0) == 0) {
        std::filesystem::remove(e.path());
        ++removed;
      }
    }
    log(fmt::format("--force: removed {} TensorBoard events files of the run that was in {}", removed, dir.string()));
  }
}

// The wall seconds the run had spent up to `checkpoint` (state.json's elapsed_s). Checkpoints
// written before it was recorded have none: the count then starts again at the resume, and the
// log says so.
double elapsed_at_checkpoint(const nlohmann::json& state, const std::filesystem::path& checkpoint,
                             const std::function<void(const std::string&)>& log) {
  if (!state.contains("elapsed_s")) {
    log(fmt::format("{} does not record the run's elapsed time: elapsed_s in metrics.jsonl counts from this resume",
                    checkpoint.string()));
    return 0;
  }
  const nlohmann::json& v = state.at("elapsed_s");
  if (!v.is_number() || !(v.get<double>() >= 0) || !std::isfinite(v.get<double>())) {
    throw Error(fmt::format("{}: state.json field \"elapsed_s\" must be a number of seconds >= 0, found {}",
                            checkpoint.string(), v.dump()));
  }
  return v.get<double>();
}

// Leftovers of a save or write killed mid-way (a crash, kill -9); named so that nothing else
// can match (util/files.h).
void remove_killed_writes(const std::filesystem::path& dir, const std::function<void(const std::string&)>& log) {
  for (const std::filesystem::path& d : {dir, dir / "checkpoints"}) {
    for (const auto& p : remove_stale_temporaries(d)) log(fmt::format("removed {}, left by an interrupted write", p.string()));
  }
}

// What every rank of a data-parallel run must agree on before it starts: the run's settings
// and where it starts. A rank started with other arguments is named.
void check_ranks_agree(Rendezvous& rendezvous, const TrainConfig& c, std::int64_t start_step) {
  const std::string mine = nlohmann::json{{"config", c.to_json()}, {"start_step", start_step}}.dump();
  const std::vector<std::string> all = rendezvous.all_gather(mine);
  for (std::size_t r = 1; r < all.size(); ++r) {
    if (all[r] != all[0]) {
      throw Error(fmt::format("rank {} runs other settings than rank 0 (every rank must be started with the same "
                              "arguments):\n  rank 0: {}\n  rank {}: {}",
                              r, all[0], r, all[r]));
    }
  }
}

TrainResult run(TrainConfig c, const std::filesystem::path& checkpoint, const nlohmann::json& resume_state,
                const TrainCallbacks& all_callbacks, const RunControl& control) {
  // In a data-parallel run only rank 0 speaks: logs, progress, metrics, checkpoints.
  const int rank = control.distributed ? control.distributed->rank : 0;
  const int world = control.distributed ? control.distributed->world_size : 1;
  const bool lead = rank == 0;
  const TrainCallbacks cb = lead ? all_callbacks : TrainCallbacks{};
  const auto log = [&](const std::string& s) {
    if (cb.log) cb.log(s);
  };
  c.validate();
  if (control.keep_last < 0) throw Error(fmt::format("--keep-last must be 0 (keep all) or more, got {}", control.keep_last));
  if (!(control.save_every_minutes >= 0) || !std::isfinite(control.save_every_minutes)) {
    throw Error(fmt::format("--save-every-minutes must be 0 (off) or a finite number of minutes, got {}",
                            control.save_every_minutes));
  }
  if (control.tensorboard && c.out_dir.empty()) {
    throw Error("--tensorboard needs --out: the events are written to OUT/tensorboard/");
  }
  if (control.diagnostics_every < 0) {
    throw Error(fmt::format("--diagnostics must be a number of steps >= 1 (or 0: off), got {}", control.diagnostics_every));
  }
  if (control.diagnostics_every > 0 && c.out_dir.empty()) {
    throw Error("--diagnostics needs --out: the measurements are written to OUT/metrics.jsonl");
  }
  check_token_limit(control.diagnostics_tokens, "--diagnostics-tokens");
  // Resolved before the ranks compare their settings: a run folder's latest checkpoint may move.
  if (checkpoint.empty() && !c.init_from.empty()) c.init_from = resolve_initial_checkpoint(c.init_from, c.out_dir).string();
  // Before any connection: every rank finds the same error in its settings.
  const MicroBatchSlice slice = micro_batch_slice(c.grad_accum, world, rank);
  std::unique_ptr<Rendezvous> rendezvous;
  if (control.distributed) {
    rendezvous = Rendezvous::connect(*control.distributed, dist_timeout_seconds());
    check_ranks_agree(*rendezvous, c, checkpoint.empty() ? 0 : resume_state.at("step").get<std::int64_t>());
    select_device_for_rank(c.device, control.distributed->local_rank);
  }
  std::unique_ptr<Backend> backend = make_backend(c.device);
  const Dataset data = load_dataset(c.data, c.tokenizer);
  const std::unique_ptr<Tokenizer> tokenizer = make_tokenizer(data.tokenizer);
  const LlamaConfig mc = model_config(c, tokenizer->vocab_size());
  const Recipe recipe = make_recipe(c.recipe, c.recipe_options);
  check_recipe_fits(mc, recipe, c.batch * c.seq);
  BatchLoader loader(data.train, c.batch, c.seq, "training", parse_data_order(c.data_order), c.seed);
  // A data-parallel run pads the flat buffers so that they cut into equal shards.
  LlamaModel model(*backend, mc, recipe, c.seed, control.distributed ? world * FlatParameters::kSegmentAlignment : 1);
  std::unique_ptr<Communicator> comm;
  std::unique_ptr<AdamW> adamw;
  std::unique_ptr<ShardedAdamW> sharded;
  StepOptimizer* optimizer = nullptr;
  if (control.distributed) {
    comm = make_communicator(*backend, std::move(rendezvous));
    sharded = std::make_unique<ShardedAdamW>(*backend, model, *comm);
    optimizer = sharded.get();
  } else {
    adamw = std::make_unique<AdamW>(*backend, model);
    optimizer = adamw.get();
  }

  std::int64_t start_step = 0, tokens_seen = 0, skipped = 0;
  double elapsed_before = 0;  // wall seconds the run spent before this process (up to the checkpoint)
  std::int64_t start_tokens = 0;
  if (!checkpoint.empty()) {
    if (sharded) {
      // Checkpoints hold the full moments, whatever number of ranks wrote them: each rank takes its shard.
      FullAdamState full = make_full_adam_state(*backend, model);
      load_checkpoint_tensors(checkpoint, *backend, model, &full.views);
      sharded->load_shard(full);
    } else {
      load_checkpoint_tensors(checkpoint, *backend, model, &adamw->state());
    }
    start_step = resume_state.at("step");
    tokens_seen = resume_state.at("tokens");
    start_tokens = tokens_seen;
    skipped = resume_state.at("skipped_steps");
    if (resume_state.at("data").value("fingerprint", std::string()) != data_fingerprint(data.train)) {
      throw Error(fmt::format("{}: the training data differs from the data this checkpoint was trained on ({})",
                              checkpoint.string(), c.data));
    }
    loader.set_position(resume_state.at("data").at("position"));
    loader.set_epoch(resume_state.at("data").at("epoch"));
    elapsed_before = elapsed_at_checkpoint(resume_state, checkpoint, log);
    log(fmt::format("resumed from {} at step {}", checkpoint.string(), start_step));
  } else if (!c.init_from.empty()) {
    load_initial_weights(c.init_from, *backend, model, mc, data.tokenizer, log);
  }
  log(fmt::format("device {}", backend->name()));
  log(fmt::format("model {}: {} layers, d {}, {} heads ({} kv), ffn {}, vocab {}: {:.2f}M parameters ({:.2f}M in blocks)",
                  mc.size, mc.n_layers, mc.d_model, mc.n_heads, mc.n_kv_heads, mc.ffn(), mc.vocab_size,
                  static_cast<double>(mc.total_parameters()) / 1e6, static_cast<double>(mc.block_parameters()) / 1e6));
  log("recipe " + recipe.describe());
  if (comm) {
    log(fmt::format("data parallel: {} ranks ({}), {} micro-batch{} of {} each per step; optimizer state sharded: "
                    "{:.1f} MiB per rank; gradients reduced in {} bucket{} as the backward pass completes them",
                    world, comm->name(), slice.count, slice.count == 1 ? "" : "es", c.batch,
                    static_cast<double>(sharded->state_bytes()) / 1048576.0, sharded->buckets().plan().size(),
                    sharded->buckets().plan().size() == 1 ? "" : "s"));
  }
  // The probe watches the step's first micro-batch, which rank 0 runs.
  std::int64_t diagnostics_every = lead ? control.diagnostics_every : 0;
  if (diagnostics_every > 0 && !model.quantizes_any_linear()) {
    log(fmt::format("--diagnostics: recipe {} runs no quantized GEMM in this model; there is nothing to measure",
                    recipe.name));
    diagnostics_every = 0;
  }
  log(fmt::format("data {}: {} tokenizer, {} train / {} val tokens; {} steps of {} tokens ({} x {} x {})", data.source,
                  data.tokenizer, data.train.size(), data.val.size(), c.steps, c.tokens_per_step(), c.batch, c.seq,
                  c.grad_accum));

  std::optional<AppendFile> metrics;
  if (!c.out_dir.empty() && lead) {
    // A fresh run, or a resumed one written elsewhere than its own run folder, must not mix
    // with (or truncate the metrics of) a run already there.
    const bool own_folder = !checkpoint.empty() && std::filesystem::weakly_canonical(c.out_dir) ==
                                                       std::filesystem::weakly_canonical(checkpoint.parent_path().parent_path());
    if (!own_folder) {
      check_run_folder(c.out_dir, control);
      if (control.replace_existing_run) remove_old_run(c.out_dir, log);
    } else {
      rewind_later_checkpoints(c.out_dir, checkpoint, start_step, control, log);
    }
    std::filesystem::create_directories(c.out_dir);
    remove_killed_writes(c.out_dir, log);
    const std::filesystem::path path = std::filesystem::path(c.out_dir) / "metrics.jsonl";
    if (checkpoint.empty()) {
      write_file_atomic(path, "");
    } else {
      truncate_metrics(path, start_step);
    }
    metrics.emplace(path);
  }
  // A new events file per process: TensorBoard reads a folder's files in name order as one
  // stream. A resumed run starts with a SessionLog START at the first step it runs (the
  // checkpoint's + 1), at which TensorBoard's reader drops what it holds for that step and later:
  // the steps the old process ran past its last checkpoint, which this run repeats.
  std::optional<EventsFileWriter> events;
  if (control.tensorboard && lead) {
    events.emplace(tensorboard_folder(c.out_dir), unix_seconds_now());
    if (!checkpoint.empty()) {
      TensorBoardEvent restart;
      restart.wall_time = unix_seconds_now();
      restart.step = start_step + 1;
      restart.session_start = true;
      events->write(restart);
    }
    log(fmt::format("TensorBoard events: {}", events->path().string()));
  }

  TrainResult result;
  result.start_step = start_step;
  result.init_from = c.init_from;
  if (events) result.tensorboard_file = events->path().string();
  // Set when the loop starts; the run's elapsed time is elapsed_before plus the time since then.
  std::chrono::steady_clock::time_point start_time;
  const auto elapsed_now = [&]() {
    return elapsed_before + std::chrono::duration<double>(std::chrono::steady_clock::now() - start_time).count();
  };
  // Where the data stream stands after the last batch a completed step consumed (the
  // prefetcher runs ahead of it).
  std::int64_t data_position = loader.position(), data_epoch = loader.epoch();
  const auto state_json = [&](std::int64_t step) {
    return nlohmann::json{{"step", step},
                          {"tokens", tokens_seen},
                          {"skipped_steps", skipped},
                          {"data",
                           {{"position", data_position},
                            {"epoch", data_epoch},
                            {"source", data.source},
                            {"fingerprint", data_fingerprint(data.train)}}},
                          {"tokenizer", data.tokenizer},
                          {"elapsed_s", elapsed_now()},
                          {"config", c.to_json()}};
  };
  auto last_save_time = std::chrono::steady_clock::now();
  const auto save = [&](std::int64_t step) {
    if (c.out_dir.empty()) return;
    // Every rank sends its shard of the moments to rank 0, which writes the one checkpoint.
    std::optional<FullAdamState> full;
    if (sharded) full = sharded->gather_state_to_first();
    if (!lead) return;
    result.last_checkpoint =
        save_checkpoint(c.out_dir, step, *backend, model, sharded ? full->views : adamw->state(), state_json(step))
            .string();
    log(fmt::format("saved checkpoint {}", result.last_checkpoint));
    last_save_time = std::chrono::steady_clock::now();
    // Only after the new checkpoint is complete and `latest` names it.
    const auto removed = prune_checkpoints(c.out_dir, control.keep_last);
    if (!removed.empty()) {
      log(fmt::format("--keep-last {}: removed {} older checkpoint{} ({} ... {})", control.keep_last, removed.size(),
                      removed.size() == 1 ? "" : "s", removed.front().filename().string(),
                      removed.back().filename().string()));
    }
  };
  // --save-every-minutes: wall time since the last save (or the start of this process's run).
  const auto save_is_due = [&]() {
    return control.save_every_minutes > 0 &&
           std::chrono::duration<double>(std::chrono::steady_clock::now() - last_save_time).count() >=
               control.save_every_minutes * 60.0;
  };

  const double grad_scale = 1.0 / static_cast<double>(c.tokens_per_step());
  BatchPrefetcher batches(std::move(loader), 2 * c.grad_accum);
  TrainStep train_step(*backend, model, *optimizer, c.batch, c.seq);
  std::vector<Batch> micro_batches(static_cast<std::size_t>(slice.count));
  start_time = std::chrono::steady_clock::now();
  auto last = start_time;
  last_save_time = start_time;

  std::int64_t consecutive_skipped = 0;
  double step_seconds = 0;  // the time spent in steps (for TrainResult::tokens_per_second)
  std::int64_t saved_step = -1;  // the step of the last checkpoint this run wrote
  // A step queued on the backend and not yet finished, with what the host knows of it.
  struct LaunchedStep {
    std::int64_t step = 0;
    double lr = 0;
    std::int64_t position_after = 0, epoch_after = 0;  // the data stream after its batches
    std::unique_ptr<QuantDiagnostics> diagnostics;
  };
  const auto launch = [&](std::int64_t step) {
    auto launched = std::make_unique<LaunchedStep>();
    LaunchedStep& l = *launched;
    l.step = step;
    l.lr = learning_rate(c, step);
    // Every rank reads the whole step's stream and keeps its own micro-batches; all consumed
    // even by a failing step: data stays aligned.
    for (std::int64_t k = 0; k < c.grad_accum; ++k) {
      Batch b = batches.next();
      l.position_after = b.position_after;
      l.epoch_after = b.epoch_after;
      if (slice.contains(k)) micro_batches[static_cast<std::size_t>(k - slice.first)] = std::move(b);
    }
    AdamWStep hyper;
    hyper.lr = l.lr;
    hyper.weight_decay = c.weight_decay;
    hyper.beta1 = c.beta1;
    hyper.beta2 = c.beta2;
    hyper.eps = c.eps;
    hyper.step = step + 1;
    hyper.max_grad_norm = c.grad_clip;
    if (diagnostics_every > 0 && (step + 1) % diagnostics_every == 0) {
      l.diagnostics = std::make_unique<QuantDiagnostics>(*backend, control.diagnostics_tokens);
    }
    train_step.launch(step, micro_batches, grad_scale, hyper, l.diagnostics.get(), slice.first, c.grad_accum);
    return launched;
  };
  const auto evaluates_after = [&](std::int64_t step) {
    return step + 1 == c.steps || (c.eval_every > 0 && (step + 1) % c.eval_every == 0);
  };
  const auto save_every_after = [&](std::int64_t step) { return c.save_every > 0 && (step + 1) % c.save_every == 0; };
  const auto measures_at = [&](std::int64_t step) {
    return diagnostics_every > 0 && (step + 1) % diagnostics_every == 0;
  };
  // The next step may be queued before this one's outcome is read when nothing between the two
  // needs the model as this step leaves it (an evaluation, a checkpoint, the diagnostics). A
  // save that falls due, or a stop request, meanwhile waits for the step in flight. The ranks of
  // a data-parallel run agree on saves and stops after every step, so they never run ahead.
  const bool overlap = !comm && (control.step_overlap == StepOverlap::on ||
                                 (control.step_overlap == StepOverlap::automatic && backend->device() != Device::cpu));
  const auto may_run_ahead = [&](std::int64_t step) {
    return overlap && step + 1 < c.steps && !evaluates_after(step) &&
           !save_every_after(step) && !measures_at(step) && !measures_at(step + 1) &&
           !save_is_due() && !(control.stop && control.stop->load());
  };
  std::unique_ptr<LaunchedStep> current;
  if (start_step < c.steps) current = launch(start_step);
  while (current) {
    const std::int64_t step = current->step;
    std::unique_ptr<LaunchedStep> ahead;
    if (may_run_ahead(step)) ahead = launch(step + 1);
    StepMetrics m;
    m.step = step + 1;
    m.lr = current->lr;
    const StepOutcome outcome = train_step.finish();
    data_position = current->position_after;
    data_epoch = current->epoch_after;
    tokens_seen += c.tokens_per_step();
    m.loss = outcome.loss_sum * grad_scale;
    m.grad_norm = outcome.grad_norm;
    if (!outcome.applied) {
      ++skipped;
      m.was_skipped = true;
      log(fmt::format("step {}: {}; the update is skipped ({} skipped so far)", m.step, outcome.why_skipped, skipped));
      ++consecutive_skipped;
    } else {
      consecutive_skipped = 0;
    }
    m.skipped = skipped;
    m.tokens = tokens_seen;
    const QuantDiagnostics* diagnostics = current->diagnostics.get();
    const auto now = std::chrono::steady_clock::now();
    // The step's time (StepOutcome::device_seconds), with the host's time before it started
    // since the last step, evaluation or save; the diagnostics' measurements are not training
    // throughput.
    const double host_before =
        outcome.follows_previous ? 0.0 : std::max(0.0, std::chrono::duration<double>(outcome.started_at - last).count());
    const double step_time = host_before + outcome.device_seconds - (diagnostics ? diagnostics->seconds() : 0.0);
    m.tokens_per_second = static_cast<double>(c.tokens_per_step()) / step_time;
    if (diagnostics) m.diagnostics_seconds = diagnostics->seconds();
    step_seconds += step_time;
    last = now;
    const bool final_step = step + 1 == c.steps;
    if (evaluates_after(step)) {
      // The ranks share the windows (the result is the one-process one, bit for bit).
      const Evaluation e = evaluate(*backend, model, data, *tokenizer, c.batch, c.seq,
                                    final_step ? c.final_eval_batches : c.eval_batches, comm.get());
      m.val_loss = e.loss;
      m.val_bpb = e.bpb;
      result.final_val_loss = e.loss;
      result.final_val_bpb = e.bpb;
      last = std::chrono::steady_clock::now();  // evaluation time is not training throughput
    }
    m.unix_time = unix_seconds_now();
    m.elapsed_seconds = elapsed_now();
    m.commit = control.commit;
    if (metrics) metrics->write(m.to_json().dump() + "\n");
    if (metrics && diagnostics) metrics->write(diagnostics->to_json(m.step).dump() + "\n");
    if (events) events->write(tensorboard_event(m));
    result.history.push_back(m);
    if (cb.on_step) cb.on_step(m);
    // A diverged run would skip every remaining step and still end "successfully": stop it, and
    // save nothing (the last checkpoint is the last state worth resuming from).
    if (control.max_skipped_steps > 0 && consecutive_skipped >= control.max_skipped_steps) {
      throw Error(fmt::format(
          "training diverged: {} consecutive steps skipped (steps {} to {}; last: {}); stopped. Lower --lr, or raise "
          "--max-skipped-steps (0: never stop).{}",
          consecutive_skipped, m.step - consecutive_skipped + 1, m.step, outcome.why_skipped,
          result.last_checkpoint.empty() ? std::string()
                                         : fmt::format(" The last checkpoint is {}", result.last_checkpoint)));
    }
    current.reset();
    if (ahead) {
      // The model is already the next step's: saves and stops wait for it.
      current = std::move(ahead);
      continue;
    }
    // Wall-clock saves and stop requests (a signal) come to each rank at its own moment: the
    // ranks agree on them, so that all save, and stop, after the same step.
    bool save_due = save_is_due(), stop_requested = control.stop && control.stop->load();
    if (comm) {
      double flags[2] = {save_due ? 1.0 : 0.0, stop_requested ? 1.0 : 0.0};
      comm->all_reduce_sum_host(flags, 2);
      save_due = flags[0] > 0;
      stop_requested = flags[1] > 0;
    }
    if (final_step || save_every_after(step) || save_due) {
      save(step + 1);
      saved_step = step + 1;
      last = std::chrono::steady_clock::now();
    }
    if (stop_requested && !final_step) {
      if (saved_step != step + 1) save(step + 1);
      log(fmt::format("stopped after step {} of {}{}", step + 1, c.steps,
                      result.last_checkpoint.empty() ? std::string(" (no --out: nothing saved)")
                                                     : fmt::format("; checkpoint {}", result.last_checkpoint)));
      result.stopped = true;
      break;
    }
    if (!final_step) current = launch(step + 1);
  }
  result.skipped_steps = skipped;
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_time).count();
  result.elapsed_seconds = elapsed_before + result.seconds;
  if (step_seconds > 0) {
    result.tokens_per_second = static_cast<double>(tokens_seen - start_tokens) / step_seconds;
  }
  if (cb.on_finish) cb.on_finish(*backend, model, *tokenizer);
  if (comm) comm->finish();
  return result;
}

}  // namespace

void check_run_folder(const std::string& out_dir, const RunControl& control) {
  if (out_dir.empty()) return;
  const std::filesystem::path dir(out_dir);
  const auto status = std::filesystem::status(dir);
  if (std::filesystem::exists(status) && !std::filesystem::is_directory(status)) {
    throw Error(fmt::format("--out {} exists and is not a folder", out_dir));
  }
  if (!control.replace_existing_run && std::filesystem::is_directory(status) && holds_a_run(dir)) {
    throw Error(fmt::format("--out {} already holds a run (metrics.jsonl, checkpoints/); use --resume {} to continue "
                            "it, or --force to replace it",
                            out_dir, out_dir));
  }
}

TrainResult train(const TrainConfig& config, const TrainCallbacks& callbacks, const RunControl& control) {
  return run(config, {}, {}, callbacks, control);
}

TrainResult resume(const std::string& from, const ResumeOptions& options, const TrainCallbacks& callbacks,
                   const RunControl& control) {
  const std::filesystem::path checkpoint = resolve_checkpoint(from);
  const nlohmann::json state = read_checkpoint_state(checkpoint);
  TrainConfig c = TrainConfig::from_json(state.at("config"));
  const std::int64_t at = state.at("step").get<std::int64_t>();
  if (options.steps && *options.steps != c.steps) {
    if (callbacks.log) {
      callbacks.log(fmt::format("--steps {} differs from the run's {}: the learning-rate schedule changes from here on",
                                *options.steps, c.steps));
    }
    c.steps = *options.steps;
  }
  if (c.steps <= at) {
    throw Error(fmt::format("{} is at step {}; with {} steps there is nothing left to do", checkpoint.string(), at, c.steps));
  }
  // checkpoints live in <run>/checkpoints/<step>/
  c.out_dir = options.out_dir ? *options.out_dir : checkpoint.parent_path().parent_path().string();
  // Settings that do not change what is trained: applied from here on, and said so.
  const auto apply = [&](const char* flag, auto& field, const auto& value) {
    if (!value || *value == field) return;
    if (callbacks.log) callbacks.log(fmt::format("{} {} (the run had {}) applies from here on", flag, *value, field));
    field = *value;
  };
  apply("--save-every", c.save_every, options.save_every);
  apply("--eval-every", c.eval_every, options.eval_every);
  apply("--eval-batches", c.eval_batches, options.eval_batches);
  apply("--final-eval-batches", c.final_eval_batches, options.final_eval_batches);
  apply("--device", c.device, options.device);
  return run(c, checkpoint, state, callbacks, control);
}

}  // namespace quartet

#include "quartet/train/trainer.h"

#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "quartet/backend/cuda.h"
#include "quartet/data/dataset.h"
#include "quartet/error.h"
#include "quartet/train/checkpoint.h"
#include "quartet/util/files.h"

namespace quartet {

// ---- configuration ----------------------------------------------------------------------

void TrainConfig::validate() const {
  const auto fail = [](const std::string& why) { throw Error("train: " + why); };
  if (steps < 1) fail(fmt::format("--steps must be at least 1, got {}", steps));
  if (batch < 1) fail(fmt::format("--batch must be at least 1, got {}", batch));
  if (seq < 2) fail(fmt::format("--seq must be at least 2, got {}", seq));
  if (grad_accum < 1) fail(fmt::format("--grad-accum must be at least 1, got {}", grad_accum));
  if (!(lr > 0) || !std::isfinite(lr)) fail(fmt::format("--lr must be positive, got {}", lr));
  if (!(weight_decay >= 0)) fail(fmt::format("--weight-decay must be non-negative, got {}", weight_decay));
  if (!(grad_clip > 0)) fail(fmt::format("--grad-clip must be positive, got {}", grad_clip));
  if (!(warmup_fraction >= 0) || !(warmup_fraction < 1)) fail(fmt::format("warmup fraction must be in [0, 1), got {}", warmup_fraction));
  if (eval_every < 0 || save_every < 0) fail("--eval-every and --save-every must be non-negative");
  if (eval_batches < 1) fail(fmt::format("--eval-batches must be at least 1, got {}", eval_batches));
  if (final_eval_batches < 1) fail(fmt::format("--final-eval-batches must be at least 1, got {}", final_eval_batches));
  if (device != "auto" && device != "cpu" && device != "cuda") {
    fail(fmt::format("--device must be auto, cpu or cuda, got '{}'", device));
  }
  if (steps * grad_accum >= (std::int64_t{1} << 32)) fail("steps x grad-accum exceeds the random-number call counter");
}

namespace {

nlohmann::json options_to_json(const RecipeOptions& o) {
  nlohmann::json j = {{"quantize_forward", o.quantize_forward}, {"quantize_backward", o.quantize_backward}};
  if (o.four_over_six) j["four_over_six"] = *o.four_over_six;
  if (o.backward_rotation) j["backward_rotation"] = *o.backward_rotation;
  if (o.eden_group) j["eden_group"] = *o.eden_group;
  if (o.forward_clip) j["forward_clip"] = *o.forward_clip;
  if (o.backward_headroom) j["backward_headroom"] = *o.backward_headroom;
  if (o.backward_clip) j["backward_clip"] = *o.backward_clip;
  if (o.backward_quantizer) j["backward_quantizer"] = std::string(quantizer_name(*o.backward_quantizer));
  return j;
}

RecipeOptions options_from_json(const nlohmann::json& j) {
  RecipeOptions o;
  o.quantize_forward = j.value("quantize_forward", true);
  o.quantize_backward = j.value("quantize_backward", true);
  if (j.contains("four_over_six")) o.four_over_six = j["four_over_six"].get<bool>();
  if (j.contains("backward_rotation")) o.backward_rotation = j["backward_rotation"].get<int>();
  if (j.contains("eden_group")) o.eden_group = j["eden_group"].get<int>();
  if (j.contains("forward_clip")) o.forward_clip = j["forward_clip"].get<double>();
  if (j.contains("backward_headroom")) o.backward_headroom = j["backward_headroom"].get<double>();
  if (j.contains("backward_clip")) o.backward_clip = j["backward_clip"].get<double>();
  if (j.contains("backward_quantizer")) o.backward_quantizer = parse_quantizer(j["backward_quantizer"].get<std::string>());
  return o;
}

}  // namespace

nlohmann::json TrainConfig::to_json() const {
  const ModelOverrides& m = model_overrides;
  return {{"model", model_size},
          {"model_overrides",
           {{"d_model", m.d_model}, {"n_layers", m.n_layers}, {"n_heads", m.n_heads}, {"n_kv_heads", m.n_kv_heads},
            {"ffn_hidden", m.ffn_hidden}, {"bf16_blocks_first", m.bf16_blocks_first},
            {"bf16_blocks_last", m.bf16_blocks_last}}},
          {"recipe", recipe},
          {"recipe_options", options_to_json(recipe_options)},
          {"data", data},
          {"tokenizer", tokenizer},
          {"steps", steps},
          {"batch", batch},
          {"seq", seq},
          {"grad_accum", grad_accum},
          {"lr", lr},
          {"weight_decay", weight_decay},
          {"grad_clip", grad_clip},
          {"warmup_fraction", warmup_fraction},
          {"seed", seed},
          {"eval_every", eval_every},
          {"eval_batches", eval_batches},
          {"final_eval_batches", final_eval_batches},
          {"save_every", save_every},
          {"device", device}};
}

TrainConfig TrainConfig::from_json(const nlohmann::json& j) {
  TrainConfig c;
  try {
    c.model_size = j.at("model").get<std::string>();
    const auto& m = j.at("model_overrides");
    c.model_overrides.d_model = m.at("d_model");
    c.model_overrides.n_layers = m.at("n_layers");
    c.model_overrides.n_heads = m.at("n_heads");
    c.model_overrides.n_kv_heads = m.at("n_kv_heads");
    c.model_overrides.ffn_hidden = m.at("ffn_hidden");
    c.model_overrides.bf16_blocks_first = m.at("bf16_blocks_first");
    c.model_overrides.bf16_blocks_last = m.at("bf16_blocks_last");
    c.recipe = j.at("recipe").get<std::string>();
    c.recipe_options = options_from_json(j.at("recipe_options"));
    c.data = j.at("data").get<std::string>();
    c.tokenizer = j.at("tokenizer").get<std::string>();
    c.steps = j.at("steps");
    c.batch = j.at("batch");
    c.seq = j.at("seq");
    c.grad_accum = j.at("grad_accum");
    c.lr = j.at("lr");
    c.weight_decay = j.at("weight_decay");
    c.grad_clip = j.at("grad_clip");
    c.warmup_fraction = j.at("warmup_fraction");
    c.seed = j.at("seed");
    c.eval_every = j.at("eval_every");
    c.eval_batches = j.at("eval_batches");
    c.final_eval_batches = j.value("final_eval_batches", c.eval_batches);
    c.save_every = j.at("save_every");
    c.device = j.at("device").get<std::string>();
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("training config: a field is missing or of the wrong type ({})", e.what()));
  }
  return c;
}

double learning_rate(const TrainConfig& c, std::int64_t step) {
  const auto warmup = static_cast<std::int64_t>(std::llround(c.warmup_fraction * static_cast<double>(c.steps)));
  if (step < warmup) {
    const double f = static_cast<double>(step) / static_cast<double>(warmup);
    return c.lr * (0.01 + 0.99 * f);
  }
  const std::int64_t decay_steps = std::max<std::int64_t>(1, c.steps - 1 - warmup);
  const double progress = std::min(1.0, static_cast<double>(step - warmup) / static_cast<double>(decay_steps));
  return c.lr * (0.1 + 0.9 * 0.5 * (1.0 + std::cos(M_PI * progress)));
}

LlamaConfig model_config(const TrainConfig& c, std::int64_t vocab_size) {
  LlamaConfig m = llama_preset(c.model_size, vocab_size);
  const ModelOverrides& o = c.model_overrides;
  if (o.d_model < 0 || o.n_layers < 0 || o.n_heads < 0 || o.n_kv_heads < 0 || o.ffn_hidden < 0) {
    throw Error("model overrides (--d-model, --layers, --heads, --kv-heads, --ffn) must be positive");
  }
  if (o.d_model) m.d_model = o.d_model;
  if (o.n_layers) m.n_layers = o.n_layers;
  if (o.n_heads) {
    m.n_heads = o.n_heads;
    if (!o.n_kv_heads) m.n_kv_heads = o.n_heads;
  }
  if (o.n_kv_heads) m.n_kv_heads = o.n_kv_heads;
  if (o.ffn_hidden) m.ffn_hidden = o.ffn_hidden;
  m.bf16_blocks_first = o.bf16_blocks_first;
  m.bf16_blocks_last = o.bf16_blocks_last;
  m.max_seq_len = std::max(m.max_seq_len, c.seq);
  m.validate();
  return m;
}

nlohmann::json StepMetrics::to_json() const {
  nlohmann::json j = {{"step", step},     {"tokens", tokens},        {"loss", loss},
                      {"lr", lr},         {"grad_norm", grad_norm},  {"tokens_per_s", tokens_per_second},
                      {"skipped", skipped}};
  if (was_skipped) j["skipped_this_step"] = true;
  if (val_loss) j["val_loss"] = *val_loss;
  if (val_bpb) j["val_bpb"] = *val_bpb;
  return j;
}

// ---- the loop -----------------------------------------------------------------------------

namespace {

struct Evaluation {
  double loss = 0;  // nats per token
  double bpb = 0;   // bits per byte
};

// The first `max_batches` windows of the validation split (fewer if it is shorter).
Evaluation evaluate(Backend& backend, LlamaModel& model, const Dataset& data, const Tokenizer& tokenizer,
                    const TrainConfig& c, std::int64_t max_batches) {
  BatchLoader loader(data.val, c.batch, c.seq, "validation");
  const std::int64_t per_batch = c.batch * c.seq;
  const std::int64_t batches = std::min<std::int64_t>(max_batches, (static_cast<std::int64_t>(data.val.size()) - 1) / per_batch);
  std::vector<std::int32_t> inputs, targets;
  Tensor tok = backend.empty({per_batch}, DType::i32), tgt = backend.empty({per_batch}, DType::i32);
  double nats = 0, bytes = 0;
  std::int64_t tokens = 0;
  for (std::int64_t b = 0; b < batches; ++b) {
    loader.next(inputs, targets);
    backend.upload_tokens(tok, inputs);
    backend.upload_tokens(tgt, targets);
    try {
      nats += model.forward_loss(tok, tgt, c.batch, c.seq);
    } catch (const NonFiniteError&) {
      return Evaluation{NAN, NAN};  // a diverged model: report it, do not stop the run
    }
    for (std::int32_t t : targets) bytes += static_cast<double>(tokenizer.token_bytes(t));
    tokens += per_batch;
  }
  return Evaluation{nats / static_cast<double>(tokens), bytes > 0 ? nats / std::log(2.0) / bytes : 0.0};
}

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

TrainResult run(TrainConfig c, const std::filesystem::path& checkpoint, const nlohmann::json& resume_state,
                const TrainCallbacks& cb) {
  const auto log = [&](const std::string& s) {
    if (cb.log) cb.log(s);
  };
  c.validate();
  const bool gpu = c.device == "cuda" || (c.device == "auto" && cuda_available());
  std::unique_ptr<Backend> backend = gpu ? make_cuda_backend() : make_cpu_backend();  // cuda: throws if unavailable
  const Dataset data = load_dataset(c.data, c.tokenizer);
  const std::unique_ptr<Tokenizer> tokenizer = make_tokenizer(data.tokenizer);
  const LlamaConfig mc = model_config(c, tokenizer->vocab_size());
  const Recipe recipe = make_recipe(c.recipe, c.recipe_options);
  check_recipe_fits(mc, recipe, c.batch * c.seq);
  BatchLoader loader(data.train, c.batch, c.seq, "training");
  LlamaModel model(*backend, mc, recipe, c.seed);
  AdamState adam;
  for (Parameter& p : model.parameters()) {
    adam.m.push_back(backend->zeros(p.value.shape(), backend->param_dtype()));
    adam.v.push_back(backend->zeros(p.value.shape(), backend->param_dtype()));
  }

  std::int64_t start_step = 0, tokens_seen = 0, skipped = 0;
  if (!checkpoint.empty()) {
    load_checkpoint_tensors(checkpoint, *backend, model, &adam);
    start_step = resume_state.at("step");
    tokens_seen = resume_state.at("tokens");
    skipped = resume_state.at("skipped_steps");
    if (resume_state.at("data").value("fingerprint", std::string()) != data_fingerprint(data.train)) {
      throw Error(fmt::format("{}: the training data differs from the data this checkpoint was trained on ({})",
                              checkpoint.string(), c.data));
    }
    loader.set_position(resume_state.at("data").at("position"));
    loader.set_epoch(resume_state.at("data").at("epoch"));
    log(fmt::format("resumed from {} at step {}", checkpoint.string(), start_step));
  }
  log(fmt::format("device {}", backend->name()));
  log(fmt::format("model {}: {} layers, d {}, {} heads ({} kv), ffn {}, vocab {}: {:.2f}M parameters ({:.2f}M in blocks)",
                  mc.size, mc.n_layers, mc.d_model, mc.n_heads, mc.n_kv_heads, mc.ffn(), mc.vocab_size,
                  static_cast<double>(mc.total_parameters()) / 1e6, static_cast<double>(mc.block_parameters()) / 1e6));
  log("recipe " + recipe.describe());
  log(fmt::format("data {}: {} tokenizer, {} train / {} val tokens; {} steps of {} tokens ({} x {} x {})", data.source,
                  data.tokenizer, data.train.size(), data.val.size(), c.steps, c.tokens_per_step(), c.batch, c.seq,
                  c.grad_accum));

  std::optional<std::ofstream> metrics;
  if (!c.out_dir.empty()) {
    std::filesystem::create_directories(c.out_dir);
    const std::filesystem::path path = std::filesystem::path(c.out_dir) / "metrics.jsonl";
    if (checkpoint.empty()) {
      write_file_atomic(path, "");
    } else {
      truncate_metrics(path, start_step);
    }
    metrics.emplace(path, std::ios::app);
    if (!*metrics) throw Error(fmt::format("cannot write {}", path.string()));
  }

  TrainResult result;
  const auto state_json = [&](std::int64_t step) {
    return nlohmann::json{{"step", step},
                          {"tokens", tokens_seen},
                          {"skipped_steps", skipped},
                          {"data",
                           {{"position", loader.position()},
                            {"epoch", loader.epoch()},
                            {"source", data.source},
                            {"fingerprint", data_fingerprint(data.train)}}},
                          {"tokenizer", data.tokenizer},
                          {"config", c.to_json()}};
  };
  const auto save = [&](std::int64_t step) {
    if (c.out_dir.empty()) return;
    result.last_checkpoint = save_checkpoint(c.out_dir, step, *backend, model, adam, state_json(step)).string();
    log(fmt::format("saved checkpoint {}", result.last_checkpoint));
  };

  const std::int64_t per_micro = c.batch * c.seq;
  const double grad_scale = 1.0 / static_cast<double>(c.tokens_per_step());
  std::vector<std::int32_t> inputs, targets;
  Tensor tok = backend->empty({per_micro}, DType::i32), tgt = backend->empty({per_micro}, DType::i32);
  const auto start_time = std::chrono::steady_clock::now();
  auto last = start_time;

  for (std::int64_t step = start_step; step < c.steps; ++step) {
    StepMetrics m;
    m.step = step + 1;
    m.lr = learning_rate(c, step);
    model.zero_grads();
    double loss_sum = 0;
    std::string non_finite;  // why the step cannot be applied, if it cannot
    for (std::int64_t micro = 0; micro < c.grad_accum; ++micro) {
      loader.next(inputs, targets);  // consumed even by a failing step, so data stays aligned
      if (!non_finite.empty()) continue;
      backend->upload_tokens(tok, inputs);
      backend->upload_tokens(tgt, targets);
      const auto call = static_cast<std::uint32_t>(step * c.grad_accum + micro + 1);
      try {
        loss_sum += model.forward_backward(tok, tgt, c.batch, c.seq, grad_scale, call);
      } catch (const NonFiniteError& e) {
        non_finite = e.what();  // a quantizer met an overflowed activation or gradient
        loss_sum = NAN;
      }
    }
    tokens_seen += c.tokens_per_step();
    m.loss = loss_sum * grad_scale;
    double sq = 0;
    if (non_finite.empty()) {
      for (Parameter& p : model.parameters()) sq += backend->sum_of_squares(p.grad);
    }
    m.grad_norm = non_finite.empty() ? std::sqrt(sq) : NAN;
    if (!std::isfinite(m.loss) || !std::isfinite(m.grad_norm)) {
      ++skipped;
      m.was_skipped = true;
      if (non_finite.empty()) {
        non_finite = fmt::format("non-finite {} (loss {}, gradient norm {})", std::isfinite(m.loss) ? "gradient" : "loss",
                                 m.loss, m.grad_norm);
      }
      log(fmt::format("step {}: {}; the update is skipped ({} skipped so far)", m.step, non_finite, skipped));
    } else {
      if (m.grad_norm > c.grad_clip) {
        for (Parameter& p : model.parameters()) backend->scale(p.grad, c.grad_clip / m.grad_norm);
      }
      auto& params = model.parameters();
      for (std::size_t i = 0; i < params.size(); ++i) {
        AdamWParams hp;
        hp.lr = m.lr;
        hp.weight_decay = params[i].decay ? c.weight_decay : 0.0;
        hp.step = step + 1;
        backend->adamw_update(params[i].value, params[i].grad, adam.m[i], adam.v[i], hp);
      }
    }
    m.skipped = skipped;
    m.tokens = tokens_seen;
    const auto now = std::chrono::steady_clock::now();
    m.tokens_per_second = static_cast<double>(c.tokens_per_step()) / std::chrono::duration<double>(now - last).count();
    last = now;
    const bool final_step = step + 1 == c.steps;
    if (final_step || (c.eval_every > 0 && (step + 1) % c.eval_every == 0)) {
      const Evaluation e = evaluate(*backend, model, data, *tokenizer, c, final_step ? c.final_eval_batches : c.eval_batches);
      m.val_loss = e.loss;
      m.val_bpb = e.bpb;
      result.final_val_loss = e.loss;
      result.final_val_bpb = e.bpb;
      last = std::chrono::steady_clock::now();  // evaluation time is not training throughput
    }
    if (metrics) {
      *metrics << m.to_json().dump() << "\n";
      metrics->flush();
    }
    result.history.push_back(m);
    if (cb.on_step) cb.on_step(m);
    if (final_step || (c.save_every > 0 && (step + 1) % c.save_every == 0)) save(step + 1);
  }
  result.skipped_steps = skipped;
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_time).count();
  if (cb.on_finish) cb.on_finish(*backend, model, *tokenizer);
  return result;
}

}  // namespace

TrainResult train(const TrainConfig& config, const TrainCallbacks& callbacks) { return run(config, {}, {}, callbacks); }

TrainResult resume(const std::string& from, const ResumeOptions& options, const TrainCallbacks& callbacks) {
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
  if (options.save_every) c.save_every = *options.save_every;
  return run(c, checkpoint, state, callbacks);
}

}  // namespace quartet

// TrainConfig: validation, its JSON form, and the model it describes.
#include "quartet/train/config.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <utility>

#include "quartet/error.h"
#include "quartet/train/schedule.h"
#include "quartet/util/checked.h"

namespace quartet {

void TrainConfig::validate() const {
  const auto fail = [](const std::string& why) { throw Error("train: " + why); };
  if (steps < 1) fail(fmt::format("--steps must be at least 1, got {}", steps));
  if (batch < 1) fail(fmt::format("--batch must be at least 1, got {}", batch));
  if (seq < 2) fail(fmt::format("--seq must be at least 2, got {}", seq));
  if (grad_accum < 1) fail(fmt::format("--grad-accum must be at least 1, got {}", grad_accum));
  if (!(lr > 0) || !std::isfinite(lr)) fail(fmt::format("--lr must be positive, got {}", lr));
  if (!(weight_decay >= 0)) fail(fmt::format("--weight-decay must be non-negative, got {}", weight_decay));
  if (!(grad_clip > 0)) fail(fmt::format("--grad-clip must be positive, got {}", grad_clip));
  if (eval_every < 0 || save_every < 0) fail("--eval-every and --save-every must be non-negative");
  if (eval_batches < 1) fail(fmt::format("--eval-batches must be at least 1, got {}", eval_batches));
  if (data_order != "sequential" && data_order != "shuffled") {
    fail(fmt::format("--data-order must be sequential or shuffled, got '{}'", data_order));
  }
  if (final_eval_batches < 1) fail(fmt::format("--final-eval-batches must be at least 1, got {}", final_eval_batches));
  if (device != "auto" && device != "cpu" && device != "cuda") {
    fail(fmt::format("--device must be auto, cpu or cuda, got '{}'", device));
  }
  validate_schedule(*this);
  // The optimizer computes in FP32: a value finite and positive as a double can round to 0 or
  // infinity there, which would silently ruin the weights (an eps of 1e-50 divides by zero).
  const auto fp32 = [&](double value, const char* flag) {
    const float f = static_cast<float>(value);
    if (!std::isfinite(f) || (value != 0 && !(std::fabs(f) >= std::numeric_limits<float>::min()))) {
      fail(fmt::format("{} {} is outside FP32's normal range ({:g} to {:g}), in which the optimizer computes", flag,
                       value, std::numeric_limits<float>::min(), std::numeric_limits<float>::max()));
    }
  };
  fp32(lr, "--lr");
  fp32(eps, "--eps");
  fp32(weight_decay, "--weight-decay");
  fp32(grad_clip, "--grad-clip");
  if (min_lr) fp32(*min_lr, "--min-lr");
  for (const auto& [value, flag] : {std::pair{beta1, "--beta1"}, {beta2, "--beta2"}}) {
    if (!(static_cast<float>(value) < 1.0f)) {
      fail(fmt::format("{} {} rounds to 1 in FP32, in which the optimizer computes; it must be below 1", flag, value));
    }
  }
  const ModelOverrides& m = model_overrides;
  for (const auto& [value, flag] : {std::pair{m.d_model, "--d-model"}, {m.n_layers, "--layers"}, {m.n_heads, "--heads"},
                                    {m.n_kv_heads, "--kv-heads"}, {m.ffn_hidden, "--ffn"}}) {
    if (value < 0 || value > std::numeric_limits<std::int32_t>::max()) {
      fail(fmt::format("{} must be in [1, {}] (0 in a saved config: the preset's), got {}", flag,
                       std::numeric_limits<std::int32_t>::max(), value));
    }
  }
  if (m.bf16_blocks_first < 0 || m.bf16_blocks_last < 0) {
    fail(fmt::format("--bf16-blocks counts must be non-negative, got first:{},last:{}", m.bf16_blocks_first,
                     m.bf16_blocks_last));
  }
  // Sizes are multiplied here, checked, so that no later product can wrap (a wrapped size is a
  // division by zero or a wrong allocation further on).
  const std::int64_t micro_batch = checked_mul(batch, seq, "train: tokens per micro-batch (--batch x --seq)");
  if (micro_batch > std::numeric_limits<std::int32_t>::max()) {
    fail(fmt::format("tokens per micro-batch (--batch {} x --seq {} = {}) must be at most {} (BLAS takes 32-bit sizes)",
                     batch, seq, micro_batch, std::numeric_limits<std::int32_t>::max()));
  }
  checked_mul(micro_batch, grad_accum, "train: tokens per step (--batch x --seq x --grad-accum)");
  if (checked_mul(steps, grad_accum, "train: --steps x --grad-accum") >= (std::int64_t{1} << 32)) {
    fail(fmt::format("--steps {} x --grad-accum {} must be below 2^32 (the random-number call counter)", steps,
                     grad_accum));
  }
  checked_mul(eval_batches, micro_batch, "train: validation tokens (--eval-batches x --batch x --seq)");
  checked_mul(final_eval_batches, micro_batch, "train: validation tokens (--final-eval-batches x --batch x --seq)");
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

// Reads the fields of one JSON object, naming the file and the field's path in every error
// (the JSON library's own messages name neither, and read as an internal error).
class Fields {
 public:
  Fields(const nlohmann::json& j, std::string source, std::string path)
      : j_(j), source_(std::move(source)), path_(std::move(path)) {
    if (!j_.is_object()) fail("", fmt::format("must be an object, found {}", found(j_)));
  }

  bool has(const char* key) const { return j_.contains(key); }
  Fields object(const char* key) const { return Fields(at(key), source_, name(key)); }

  std::string string(const char* key) const {
    const nlohmann::json& v = at(key);
    if (!v.is_string()) fail(key, fmt::format("must be a string, found {}", found(v)));
    return v.get<std::string>();
  }
  bool boolean(const char* key) const {
    const nlohmann::json& v = at(key);
    if (!v.is_boolean()) fail(key, fmt::format("must be true or false, found {}", found(v)));
    return v.get<bool>();
  }
  double number(const char* key) const {
    const nlohmann::json& v = at(key);
    if (!v.is_number()) fail(key, fmt::format("must be a number, found {}", found(v)));
    return v.get<double>();
  }
  std::int64_t integer(const char* key, std::int64_t lo = std::numeric_limits<std::int64_t>::min()) const {
    const nlohmann::json& v = at(key);
    if (!v.is_number_integer() || (v.is_number_unsigned() && v.get<std::uint64_t>() > kMaxInt64)) {
      fail(key, fmt::format("must be a whole number, found {}", found(v)));
    }
    const auto value = v.get<std::int64_t>();
    if (value < lo) fail(key, fmt::format("must be at least {}, found {}", lo, value));
    return value;
  }
  std::uint64_t unsigned_integer(const char* key) const {
    const nlohmann::json& v = at(key);
    if (!v.is_number_unsigned()) fail(key, fmt::format("must be a whole number >= 0, found {}", found(v)));
    return v.get<std::uint64_t>();
  }

 private:
  static constexpr std::uint64_t kMaxInt64 = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());

  const nlohmann::json& at(const char* key) const {
    const auto it = j_.find(key);
    if (it == j_.end()) fail(key, "is missing");
    return *it;
  }
  std::string name(const std::string& key) const { return path_.empty() ? key : key.empty() ? path_ : path_ + "." + key; }
  static std::string found(const nlohmann::json& v) {
    std::string text = v.dump();
    if (text.size() > 40) text = text.substr(0, 37) + "...";
    return fmt::format("{} {}", v.type_name(), text);
  }
  [[noreturn]] void fail(const std::string& key, const std::string& why) const {
    throw Error(fmt::format("{}: field '{}' {}", source_, name(key), why));
  }

  const nlohmann::json& j_;
  std::string source_, path_;
};

RecipeOptions options_from_json(const Fields& f) {
  RecipeOptions o;
  o.quantize_forward = f.has("quantize_forward") ? f.boolean("quantize_forward") : true;
  o.quantize_backward = f.has("quantize_backward") ? f.boolean("quantize_backward") : true;
  const auto small = [&](const char* key) {
    return static_cast<int>(checked_range(f.integer(key), 0, std::numeric_limits<int>::max(), key));
  };
  if (f.has("four_over_six")) o.four_over_six = f.boolean("four_over_six");
  if (f.has("backward_rotation")) o.backward_rotation = small("backward_rotation");
  if (f.has("eden_group")) o.eden_group = small("eden_group");
  if (f.has("forward_clip")) o.forward_clip = f.number("forward_clip");
  if (f.has("backward_headroom")) o.backward_headroom = f.number("backward_headroom");
  if (f.has("backward_clip")) o.backward_clip = f.number("backward_clip");
  if (f.has("backward_quantizer")) o.backward_quantizer = parse_quantizer(f.string("backward_quantizer"));
  return o;
}

}  // namespace

nlohmann::json TrainConfig::to_json() const {
  const ModelOverrides& m = model_overrides;
  nlohmann::json j = {{"model", model_size},
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
          {"schedule", schedule},
          {"warmup_fraction", warmup_fraction},
          {"beta1", beta1},
          {"beta2", beta2},
          {"eps", eps},
          {"seed", seed},
          {"eval_every", eval_every},
          {"eval_batches", eval_batches},
          {"final_eval_batches", final_eval_batches},
          {"save_every", save_every},
          {"device", device}};
  // Written only when the run set them: unset, their defaults follow lr and steps (config.h).
  if (warmup_steps) j["warmup_steps"] = *warmup_steps;
  if (min_lr) j["min_lr"] = *min_lr;
  if (decay_fraction) j["decay_fraction"] = *decay_fraction;
  if (!init_from.empty()) j["init_from"] = init_from;  // absent: random weights, as in older runs
  // Absent: sequential, as every run before the option read its data (and their configs stay
  // comparable with those of new sequential runs).
  if (data_order != "sequential") j["data_order"] = data_order;
  return j;
}

TrainConfig TrainConfig::from_json(const nlohmann::json& j, const std::string& source, const std::string& path) {
  const Fields f(j, source, path);
  TrainConfig c;
  c.model_size = f.string("model");
  const Fields m = f.object("model_overrides");
  c.model_overrides.d_model = m.integer("d_model", 0);
  c.model_overrides.n_layers = m.integer("n_layers", 0);
  c.model_overrides.n_heads = m.integer("n_heads", 0);
  c.model_overrides.n_kv_heads = m.integer("n_kv_heads", 0);
  c.model_overrides.ffn_hidden = m.integer("ffn_hidden", 0);
  c.model_overrides.bf16_blocks_first = m.integer("bf16_blocks_first", 0);
  c.model_overrides.bf16_blocks_last = m.integer("bf16_blocks_last", 0);
  c.recipe = f.string("recipe");
  c.recipe_options = options_from_json(f.object("recipe_options"));
  c.data = f.string("data");
  c.tokenizer = f.string("tokenizer");
  if (f.has("init_from")) c.init_from = f.string("init_from");
  if (f.has("data_order")) c.data_order = f.string("data_order");
  c.steps = f.integer("steps");
  c.batch = f.integer("batch");
  c.seq = f.integer("seq");
  c.grad_accum = f.integer("grad_accum");
  c.lr = f.number("lr");
  c.weight_decay = f.number("weight_decay");
  c.grad_clip = f.number("grad_clip");
  // Checkpoints older than the schedule and AdamW options have none of their keys: they ran
  // with what are still the defaults (cosine, beta 0.9/0.95, eps 1e-8).
  if (f.has("schedule")) c.schedule = f.string("schedule");
  c.warmup_fraction = f.number("warmup_fraction");
  if (f.has("warmup_steps")) c.warmup_steps = f.integer("warmup_steps", 0);
  if (f.has("min_lr")) c.min_lr = f.number("min_lr");
  if (f.has("decay_fraction")) c.decay_fraction = f.number("decay_fraction");
  if (f.has("beta1")) c.beta1 = f.number("beta1");
  if (f.has("beta2")) c.beta2 = f.number("beta2");
  if (f.has("eps")) c.eps = f.number("eps");
  c.seed = f.unsigned_integer("seed");
  c.eval_every = f.integer("eval_every");
  c.eval_batches = f.integer("eval_batches");
  // Older checkpoints have no final_eval_batches: their final evaluation used eval_batches.
  c.final_eval_batches = f.has("final_eval_batches") ? f.integer("final_eval_batches") : c.eval_batches;
  c.save_every = f.integer("save_every");
  c.device = f.string("device");
  try {
    c.validate();
  } catch (const Error& e) {
    throw Error(fmt::format("{}: {} holds an invalid setting: {}", source, path.empty() ? "the config" : path, e.what()));
  }
  return c;
}

void check_checkpoint_state(const nlohmann::json& state, const std::string& source) {
  const Fields f(state, source, "");
  f.integer("step", 0);
  f.integer("tokens", 0);
  f.integer("skipped_steps", 0);
  f.string("tokenizer");
  const Fields data = f.object("data");
  data.integer("position", 0);
  data.integer("epoch", 0);
  if (data.has("fingerprint")) data.string("fingerprint");
  f.object("config");  // present and an object, or an error naming the file
  TrainConfig::from_json(state.at("config"), source, "config");
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
  // The parameter count is computed unchecked later (and logged): make sure it cannot wrap.
  const char* what = "model parameters (--d-model, --layers, --heads, --kv-heads, --ffn)";
  const std::int64_t d = m.d_model;
  // per layer: q, k, v and o projections, the three SwiGLU matrices, two norm weights
  const std::int64_t heads = checked_add(checked_mul(2, m.n_heads, what), checked_mul(2, m.n_kv_heads, what), what);
  const std::int64_t per_layer = checked_add(checked_add(checked_product(what, heads, m.head_dim(), d),
                                                         checked_product(what, 3, m.ffn(), d), what),
                                             checked_mul(2, d, what), what);
  checked_add(checked_mul(m.n_layers, per_layer, what), checked_product(what, 2, m.vocab_size, d), what);
  return m;
}

}  // namespace quartet

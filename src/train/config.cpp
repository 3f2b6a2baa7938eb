// TrainConfig: validation, its JSON form, and the model it describes.
#include "quartet/train/config.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "quartet/error.h"

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

}  // namespace quartet

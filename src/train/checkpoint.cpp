#include "quartet/train/checkpoint.h"

#include <fmt/format.h>

#include <unistd.h>

#include "quartet/error.h"
#include "quartet/train/config.h"
#include "quartet/util/files.h"
#include "quartet/util/safetensors.h"

namespace quartet {

namespace {

constexpr const char* kFormat = "quartet-checkpoint";
constexpr int kVersion = 1;

std::vector<std::int64_t> shape_of(const Tensor& t) { return t.shape(); }

nlohmann::json parse_json_file(const std::filesystem::path& path) {
  try {
    return nlohmann::json::parse(read_file(path));
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("{}: not valid JSON ({})", path.string(), e.what()));
  }
}

}  // namespace

nlohmann::json llama_config_to_hf_json(const LlamaConfig& c) {
  return {{"architectures", {"LlamaForCausalLM"}},
          {"model_type", "llama"},
          {"vocab_size", c.vocab_size},
          {"hidden_size", c.d_model},
          {"num_hidden_layers", c.n_layers},
          {"num_attention_heads", c.n_heads},
          {"num_key_value_heads", c.n_kv_heads},
          {"intermediate_size", c.ffn()},
          {"max_position_embeddings", c.max_seq_len},
          {"rope_theta", c.rope_theta},
          {"rms_norm_eps", c.rms_norm_eps},
          {"hidden_act", "silu"},
          {"tie_word_embeddings", false},
          {"attention_bias", false},
          {"mlp_bias", false},
          {"torch_dtype", "float32"},
          {"quartet_size", c.size},
          {"quartet_init_std", c.init_std},
          {"quartet_bf16_blocks_first", c.bf16_blocks_first},
          {"quartet_bf16_blocks_last", c.bf16_blocks_last}};
}

LlamaConfig llama_config_from_hf_json(const nlohmann::json& j, const std::string& origin) {
  LlamaConfig c;
  try {
    c.vocab_size = j.at("vocab_size").get<std::int64_t>();
    c.d_model = j.at("hidden_size").get<std::int64_t>();
    c.n_layers = j.at("num_hidden_layers").get<std::int64_t>();
    c.n_heads = j.at("num_attention_heads").get<std::int64_t>();
    c.n_kv_heads = j.value("num_key_value_heads", c.n_heads);
    c.ffn_hidden = j.at("intermediate_size").get<std::int64_t>();
    c.max_seq_len = j.at("max_position_embeddings").get<std::int64_t>();
    c.rope_theta = j.value("rope_theta", 10000.0);
    c.rms_norm_eps = j.value("rms_norm_eps", 1e-5);
    c.size = j.value("quartet_size", std::string("custom"));
    c.init_std = j.value("quartet_init_std", 0.02);
    c.bf16_blocks_first = j.value("quartet_bf16_blocks_first", std::int64_t{0});
    c.bf16_blocks_last = j.value("quartet_bf16_blocks_last", std::int64_t{0});
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("{}: model config field missing or of the wrong type ({})", origin, e.what()));
  }
  c.validate();
  return c;
}

std::filesystem::path save_checkpoint(const std::filesystem::path& run_dir, std::int64_t step, Backend& backend,
                                      LlamaModel& model, const AdamState& adam, const nlohmann::json& state) {
  const std::filesystem::path root = run_dir / "checkpoints";
  const std::string name = fmt::format("step-{:06}", step);
  const std::filesystem::path final_dir = root / name;
  const std::filesystem::path tmp = root / fmt::format(".{}.tmp-{}", name, ::getpid());
  std::filesystem::create_directories(root);
  std::filesystem::remove_all(tmp);
  std::filesystem::create_directories(tmp);

  SafeTensors weights, moments;
  const auto& params = model.parameters();
  for (std::size_t i = 0; i < params.size(); ++i) {
    weights.tensors[params[i].name] = make_f32_tensor(shape_of(params[i].value), backend.download(params[i].value));
    moments.tensors[params[i].name + ".exp_avg"] = make_f32_tensor(shape_of(adam.m[i]), backend.download(adam.m[i]));
    moments.tensors[params[i].name + ".exp_avg_sq"] = make_f32_tensor(shape_of(adam.v[i]), backend.download(adam.v[i]));
  }
  weights.metadata["format"] = "pt";
  write_safetensors(tmp / "model.safetensors", weights);
  write_safetensors(tmp / "optimizer.safetensors", moments);
  write_file_atomic(tmp / "config.json", llama_config_to_hf_json(model.config()).dump(2) + "\n");
  nlohmann::json full = state;
  full["format"] = kFormat;
  full["version"] = kVersion;
  write_file_atomic(tmp / "state.json", full.dump(2) + "\n");

  // A checkpoint of the same step already there (a resumed run passing it again) is moved
  // aside first and removed only once the new one is in place.
  const std::filesystem::path old = root / fmt::format(".{}.old-{}", name, ::getpid());
  const bool replacing = std::filesystem::exists(final_dir);
  if (replacing) std::filesystem::rename(final_dir, old);
  std::filesystem::rename(tmp, final_dir);
  sync_directory(root);
  if (replacing) std::filesystem::remove_all(old);
  write_file_atomic(root / "latest", name + "\n");
  return final_dir;
}

std::filesystem::path resolve_checkpoint(const std::filesystem::path& path) {
  if (std::filesystem::exists(path / "state.json")) return path;
  for (const std::filesystem::path& root : {path / "checkpoints", path}) {
    if (std::filesystem::exists(root / "latest")) {
      std::string name = read_file(root / "latest");
      while (!name.empty() && (name.back() == '\n' || name.back() == ' ')) name.pop_back();
      const std::filesystem::path dir = root / name;
      if (!std::filesystem::exists(dir / "state.json")) {
        throw Error(fmt::format("{}/latest names '{}', which is not a complete checkpoint", root.string(), name));
      }
      return dir;
    }
  }
  throw Error(fmt::format("{}: not a checkpoint (no state.json) nor a run folder with checkpoints/latest", path.string()));
}

nlohmann::json read_checkpoint_state(const std::filesystem::path& checkpoint) {
  const nlohmann::json state = parse_json_file(checkpoint / "state.json");
  if (state.value("format", std::string()) != kFormat) {
    throw Error(fmt::format("{}/state.json is not a Quartet checkpoint state", checkpoint.string()));
  }
  if (state.value("version", 0) != kVersion) {
    throw Error(fmt::format("{}/state.json has checkpoint version {}, this program reads version {}", checkpoint.string(),
                            state.value("version", 0), kVersion));
  }
  check_checkpoint_state(state, (checkpoint / "state.json").string());  // every reader may use its fields
  return state;
}

void load_checkpoint_tensors(const std::filesystem::path& checkpoint, Backend& backend, LlamaModel& model,
                             AdamState* adam) {
  const SafeTensors weights = read_safetensors(checkpoint / "model.safetensors");
  std::optional<SafeTensors> moments;
  if (adam) moments = read_safetensors(checkpoint / "optimizer.safetensors");
  auto& params = model.parameters();
  for (std::size_t i = 0; i < params.size(); ++i) {
    backend.upload(params[i].value, tensor_values(weights.get(params[i].name, "F32", shape_of(params[i].value))));
    if (adam) {
      backend.upload(adam->m[i], tensor_values(moments->get(params[i].name + ".exp_avg", "F32", shape_of(adam->m[i]))));
      backend.upload(adam->v[i], tensor_values(moments->get(params[i].name + ".exp_avg_sq", "F32", shape_of(adam->v[i]))));
    }
  }
  if (weights.tensors.size() != params.size()) {
    throw Error(fmt::format("{}/model.safetensors holds {} tensors, the model has {} parameters", checkpoint.string(),
                            weights.tensors.size(), params.size()));
  }
}

}  // namespace quartet

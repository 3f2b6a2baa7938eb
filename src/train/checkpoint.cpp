#include "quartet/train/checkpoint.h"

#include <fmt/format.h>

#include <cmath>
#include <limits>
#include <optional>

#include "quartet/error.h"
#include "quartet/train/config.h"
#include "quartet/util/files.h"
#include "quartet/util/safetensors.h"

namespace quartet {

namespace {

constexpr const char* kFormat = "quartet-checkpoint";
constexpr int kVersion = 1;

std::vector<std::int64_t> shape_of(const Tensor& t) { return t.shape(); }

// A tensor's values, refusing NaN and infinity: a checkpoint is written only from applied
// (finite) updates, so a non-finite value means a corrupt or tampered file. Accepting it would
// make every later step non-finite (skipped), sampling print nothing and export copy it.
std::vector<double> finite_values(const SafeTensors& file, const std::string& name, const std::vector<std::int64_t>& shape,
                                  const std::filesystem::path& origin) {
  std::vector<double> values = tensor_values(file.get(name, "F32", shape));
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (!std::isfinite(values[i])) {
      throw Error(fmt::format("{}: tensor '{}' holds a non-finite value ({} at element {}); the checkpoint is corrupt",
                              origin.string(), name, values[i], i));
    }
  }
  return values;
}

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

namespace {

// An integer field of an exported config.json: a JSON whole number within int64 (a fraction or a
// huge number is refused rather than converted, which would truncate or be undefined).
std::int64_t config_integer(const nlohmann::json& j, const char* key, const std::string& origin,
                            std::optional<std::int64_t> fallback = std::nullopt) {
  const auto it = j.find(key);
  if (it == j.end()) {
    if (fallback) return *fallback;
    throw Error(fmt::format("{}: model config field '{}' is missing", origin, key));
  }
  const bool in_range = it->is_number_integer() &&
                        !(it->is_number_unsigned() &&
                          it->get<std::uint64_t>() > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()));
  if (!in_range) throw Error(fmt::format("{}: model config field '{}' must be a whole number, found {}", origin, key, it->dump()));
  return it->get<std::int64_t>();
}

}  // namespace

LlamaConfig llama_config_from_hf_json(const nlohmann::json& j, const std::string& origin) {
  if (!j.is_object()) throw Error(fmt::format("{}: a model config must be a JSON object", origin));
  LlamaConfig c;
  c.vocab_size = config_integer(j, "vocab_size", origin);
  c.d_model = config_integer(j, "hidden_size", origin);
  c.n_layers = config_integer(j, "num_hidden_layers", origin);
  c.n_heads = config_integer(j, "num_attention_heads", origin);
  c.n_kv_heads = config_integer(j, "num_key_value_heads", origin, c.n_heads);
  c.ffn_hidden = config_integer(j, "intermediate_size", origin);
  c.max_seq_len = config_integer(j, "max_position_embeddings", origin);
  c.bf16_blocks_first = config_integer(j, "quartet_bf16_blocks_first", origin, 0);
  c.bf16_blocks_last = config_integer(j, "quartet_bf16_blocks_last", origin, 0);
  try {
    c.rope_theta = j.value("rope_theta", 10000.0);
    c.rms_norm_eps = j.value("rms_norm_eps", 1e-5);
    c.size = j.value("quartet_size", std::string("custom"));
    c.init_std = j.value("quartet_init_std", 0.02);
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("{}: model config field of the wrong type ({})", origin, e.what()));
  }
  c.validate();
  return c;
}

std::filesystem::path save_checkpoint(const std::filesystem::path& run_dir, std::int64_t step, Backend& backend,
                                      LlamaModel& model, const AdamState& adam, const nlohmann::json& state) {
  const std::filesystem::path root = run_dir / "checkpoints";
  const std::string name = fmt::format("step-{:06}", step);
  const std::filesystem::path final_dir = root / name;
  std::filesystem::create_directories(root);
  // A fresh, unpredictable name (util/files.h): a killed save's leftover is removed by the next
  // run (remove_stale_temporaries), never reused.
  const std::filesystem::path tmp = make_temporary_folder(root, name);

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
  const bool replacing = std::filesystem::exists(final_dir);
  // rename(2) may replace an empty folder: the reserved name cannot be a planted symlink.
  const std::filesystem::path old = replacing ? make_temporary_folder(root, name, "old") : std::filesystem::path();
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
      // Only a checkpoint of this run: an absolute path or "../" would resume (and rewrite the
      // metrics and checkpoints of) another run.
      if (!is_plain_name(name)) {
        throw Error(fmt::format("{}/latest names '{}': expected the name of a checkpoint folder beside it "
                                "(like step-000100), not a path",
                                root.string(), name));
      }
      const std::filesystem::path dir = root / name;
      if (std::filesystem::is_symlink(dir)) {
        throw Error(fmt::format("{}/latest names '{}', which is a symlink, not a checkpoint folder of this run",
                                root.string(), name));
      }
      if (!std::filesystem::is_directory(dir)) {
        throw Error(fmt::format("{}/latest names '{}', which is not a complete checkpoint: {}", root.string(), name,
                                std::filesystem::exists(dir) ? fmt::format("{} is not a folder", dir.string())
                                                             : fmt::format("there is no folder {}", dir.string())));
      }
      if (!std::filesystem::exists(dir / "state.json")) {
        throw Error(fmt::format("{}/latest names '{}', which is not a complete checkpoint: {} is missing",
                                root.string(), name, (dir / "state.json").string()));
      }
      return dir;
    }
  }
  throw Error(fmt::format("{}: not a checkpoint (no state.json) nor a run folder with checkpoints/latest", path.string()));
}

nlohmann::json read_checkpoint_state(const std::filesystem::path& checkpoint) {
  const nlohmann::json state = parse_json_file(checkpoint / "state.json");
  const auto format = state.is_object() ? state.find("format") : state.end();
  if (!state.is_object() || format == state.end() || !format->is_string() || format->get<std::string>() != kFormat) {
    throw Error(fmt::format("{}/state.json is not a Quartet checkpoint state", checkpoint.string()));
  }
  const auto version = state.find("version");
  if (version == state.end() || !version->is_number_integer() || version->get<std::int64_t>() != kVersion) {
    throw Error(fmt::format("{}/state.json has checkpoint version {}, this program reads version {}", checkpoint.string(),
                            version == state.end() ? std::string("(none)") : version->dump(), kVersion));
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
    const std::filesystem::path model_file = checkpoint / "model.safetensors";
    const std::filesystem::path optimizer_file = checkpoint / "optimizer.safetensors";
    backend.upload(params[i].value, finite_values(weights, params[i].name, shape_of(params[i].value), model_file));
    if (adam) {
      backend.upload(adam->m[i], finite_values(*moments, params[i].name + ".exp_avg", shape_of(adam->m[i]), optimizer_file));
      backend.upload(adam->v[i], finite_values(*moments, params[i].name + ".exp_avg_sq", shape_of(adam->v[i]), optimizer_file));
    }
  }
  if (weights.tensors.size() != params.size()) {
    throw Error(fmt::format("{}/model.safetensors holds {} tensors, the model has {} parameters", checkpoint.string(),
                            weights.tensors.size(), params.size()));
  }
}

}  // namespace quartet

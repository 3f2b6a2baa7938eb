// `quartet export`: a checkpoint as a Hugging Face folder (config.json + model.safetensors with
// LlamaForCausalLM names; the fused Q|K|V and gate|up weights split; the tokenizer's files and
// generation_config.json), loadable with transformers' AutoTokenizer and
// AutoModelForCausalLM.from_pretrained (docs/hf-export.md). With --reference it also writes the
// logits our FP64 reference backend computes (no quantization, no rounding) for a fixed token
// sequence and its greedy continuation of a fixed prompt, so the export can be checked against
// transformers (tests/gpu/hf_export_check.py).
#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "quartet/data/hf_tokenizer_files.h"
#include "quartet/data/tokenizer.h"
#include "quartet/error.h"
#include "quartet/nn/generate.h"
#include "quartet/train/checkpoint.h"
#include "quartet/train/hf_generation_config.h"
#include "quartet/train/trainer.h"
#include "quartet/util/files.h"
#include "quartet/util/safetensors.h"

namespace quartet::cli {

namespace {

struct ExportOptions {
  std::string checkpoint;
  std::string out;
  bool reference = false;
  bool force = false;
};

// Rows [begin, end) of a row-major [rows, cols] F32 tensor.
SafeTensor row_slice(const SafeTensor& t, std::int64_t begin, std::int64_t end) {
  const std::int64_t cols = t.shape.at(1);
  SafeTensor s;
  s.dtype = t.dtype;
  s.shape = {end - begin, cols};
  s.bytes = t.bytes.substr(static_cast<std::size_t>(begin * cols * 4), static_cast<std::size_t>((end - begin) * cols * 4));
  return s;
}

// The files an export writes.
const char* const kExportFiles[] = {"model.safetensors",      "config.json",           "generation_config.json",
                                    "tokenizer.json",         "tokenizer_config.json", "special_tokens_map.json",
                                    "quartet_reference.json"};

// The prompt of the reference's greedy continuation (the embedded corpus's first words, so that
// even a tiny model continues it with something readable).
constexpr const char* kReferencePrompt = "It is a truth universally acknowledged";

// Refuses an --out that would destroy something: a file, a checkpoint (its model.safetensors
// would be replaced by one with other names: not even --force allows that), or an earlier
// export (without --force).
void check_export_folder(const std::filesystem::path& out, const std::filesystem::path& checkpoint, bool force) {
  const auto status = std::filesystem::status(out);
  const bool exists = std::filesystem::exists(status);
  if (exists && !std::filesystem::is_directory(status)) {
    throw Error(fmt::format("--out {} exists and is not a folder", out.string()));
  }
  if (exists && (std::filesystem::equivalent(out, checkpoint) || std::filesystem::exists(out / "state.json"))) {
    throw Error(fmt::format("--out {} is a checkpoint folder; exporting into it would destroy the checkpoint "
                            "(even with --force): choose another folder",
                            out.string()));
  }
  // A training run's folder, or a folder inside one: the export would be mixed in with the
  // run's own files, and `train --force` on the run would later leave it behind beside a new run.
  // (A folder above --out counts as a run only with both of a run's marks, metrics.jsonl and
  // checkpoints/: a home folder with a checkpoints/ folder in it is not a run.)
  const std::filesystem::path target = std::filesystem::absolute(out).lexically_normal();
  for (std::filesystem::path dir = target; !dir.empty(); dir = dir.parent_path()) {
    const bool metrics = std::filesystem::exists(dir / "metrics.jsonl");
    const bool checkpoints = std::filesystem::exists(dir / "checkpoints");
    if (dir == target ? (metrics || checkpoints) : (metrics && checkpoints)) {
      throw Error(fmt::format("--out {} is {} training run's folder ({} holds {}); export into a folder outside it",
                              out.string(), dir == target ? "a" : "inside a", dir.string(),
                              metrics ? "metrics.jsonl" : "checkpoints/"));
    }
    if (dir == dir.parent_path()) break;
  }
  if (!exists) return;
  if (force) return;
  for (const char* name : kExportFiles) {
    if (std::filesystem::exists(std::filesystem::symlink_status(out / name))) {
      throw Error(fmt::format("{} already holds a model ({}); use --force to replace it", out.string(), name));
    }
  }
}

}  // namespace

Command add_export_command(CLI::App& parent) {
  auto o = std::make_shared<ExportOptions>();
  CLI::App* app = parent.add_subcommand(
      "export", "Write a checkpoint as a Hugging Face folder (LlamaForCausalLM, tokenizer, generation config)");
  app->add_option("checkpoint", o->checkpoint, "checkpoint folder or run folder")->required();
  app->add_option("--out", o->out, "output folder")->required();
  app->add_flag("--reference", o->reference,
                "also write quartet_reference.json: FP64 logits of a fixed token sequence and the greedy continuation of a "
                "fixed prompt, for checking the export");
  app->add_flag("--force", o->force, "replace files already in the output folder");

  Command command;
  command.app = app;
  command.run = [o]() {
    const std::filesystem::path dir = resolve_checkpoint(o->checkpoint);
    const nlohmann::json state = read_checkpoint_state(dir);
    const TrainConfig c = TrainConfig::from_json(state.at("config"));
    const std::unique_ptr<Tokenizer> tokenizer = make_tokenizer(state.at("tokenizer").get<std::string>());
    const LlamaConfig mc = model_config(c, tokenizer->vocab_size());
    const std::filesystem::path out(o->out);
    check_export_folder(out, dir, o->force);
    {
      // Every tensor must have the shape the configuration implies (load checks each one).
      auto backend = make_cpu_backend();
      LlamaModel model(*backend, mc, make_recipe("bf16"), c.seed);
      load_checkpoint_tensors(dir, *backend, model, nullptr);
    }
    const SafeTensors ours = read_safetensors(dir / "model.safetensors");
    SafeTensors hf;
    hf.metadata["format"] = "pt";
    const std::int64_t hd = mc.head_dim(), q = mc.n_heads * hd, kv = mc.n_kv_heads * hd, f = mc.ffn();
    for (const auto& [name, t] : ours.tensors) {
      const std::string& tensor_name = name;  // clang before 16 cannot capture a structured binding
      const auto suffix = [&tensor_name](const std::string& s) {
        return tensor_name.size() >= s.size() &&
               tensor_name.compare(tensor_name.size() - s.size(), s.size(), s) == 0;
      };
      if (suffix("self_attn.qkv_proj.weight")) {
        const std::string p = name.substr(0, name.size() - std::string("qkv_proj.weight").size());
        hf.tensors[p + "q_proj.weight"] = row_slice(t, 0, q);
        hf.tensors[p + "k_proj.weight"] = row_slice(t, q, q + kv);
        hf.tensors[p + "v_proj.weight"] = row_slice(t, q + kv, q + 2 * kv);
      } else if (suffix("mlp.gate_up_proj.weight")) {
        const std::string p = name.substr(0, name.size() - std::string("gate_up_proj.weight").size());
        hf.tensors[p + "gate_proj.weight"] = row_slice(t, 0, f);
        hf.tensors[p + "up_proj.weight"] = row_slice(t, f, 2 * f);
      } else {
        hf.tensors[name] = t;
      }
    }
    // Made before anything is written: a tokenizer that cannot be described leaves no half export.
    const HfTokenizerFiles tokenizer_files = hf_tokenizer_files(*tokenizer, mc.max_seq_len);
    const std::string generation_config = hf_generation_config_json(SamplingOptions{}, tokenizer->eot());
    std::filesystem::create_directories(out);
    write_safetensors(out / "model.safetensors", hf);
    nlohmann::json config = llama_config_to_hf_json(mc);
    config["bos_token_id"] = tokenizer->eot();
    config["eos_token_id"] = tokenizer->eot();
    // transformers keeps unknown keys; a checker needs it to tokenize text as quartet does.
    config["quartet_tokenizer"] = tokenizer->name();
    write_file_atomic(out / "config.json", config.dump(2) + "\n");
    write_file_atomic(out / "generation_config.json", generation_config);
    write_file_atomic(out / "tokenizer_config.json", tokenizer_files.tokenizer_config_json);
    write_file_atomic(out / "special_tokens_map.json", tokenizer_files.special_tokens_map_json);
    write_file_atomic(out / "tokenizer.json", tokenizer_files.tokenizer_json);

    if (o->reference) {
      auto backend = make_cpu_reference_backend();
      LlamaModel model(*backend, mc, make_recipe("bf16"), c.seed);
      load_checkpoint_tensors(dir, *backend, model, nullptr);
      const std::int64_t n = std::min<std::int64_t>(32, mc.max_seq_len);
      std::vector<std::int32_t> tokens(static_cast<std::size_t>(n));
      for (std::int64_t i = 0; i < n; ++i) tokens[static_cast<std::size_t>(i)] = static_cast<std::int32_t>((i * 7919 + 13) % mc.vocab_size);
      Tensor tok = backend->empty({n}, DType::i32);
      backend->upload_tokens(tok, tokens);
      nlohmann::json ref = {{"tokens", tokens}, {"logits", backend->download(model.forward_logits(tok, 1, n))}};
      // Greedy continuation as `quartet sample --temperature 0` makes it (<|endoftext|>, then
      // the prompt), within the context so that no window slides (transformers' would not).
      std::vector<std::int32_t> prompt = {tokenizer->eot()};
      for (const std::int32_t id : tokenizer->encode(kReferencePrompt)) prompt.push_back(id);
      SamplingOptions greedy;
      greedy.temperature = 0;
      greedy.max_tokens = std::min<std::int64_t>(32, mc.max_seq_len - static_cast<std::int64_t>(prompt.size()));
      greedy.stop_token = tokenizer->eot();
      if (greedy.max_tokens > 0) {
        ref["greedy"] = {{"prompt", kReferencePrompt},
                         {"prompt_tokens", prompt},
                         {"tokens", generate(*backend, model, prompt, greedy)}};
      }
      write_file_atomic(out / "quartet_reference.json", ref.dump() + "\n");
    } else {
      // A reference left by an earlier export (replaced with --force) describes another model.
      std::filesystem::remove(out / "quartet_reference.json");
    }
    fmt::print("exported {} ({} tensors, Hugging Face names) to {}\n", dir.string(), hf.tensors.size(), o->out);
    return 0;
  };
  return command;
}

}  // namespace quartet::cli

// A trained model's description as its checkpoint holds it (configuration, tokenizer, shape),
// for what reads one: `quartet eval`, `quartet diagnose`, `--init-from`; and data checked
// against its tokenizer.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "quartet/data/dataset.h"
#include "quartet/data/tokenizer.h"
#include "quartet/nn/llama.h"
#include "quartet/train/config.h"

namespace quartet {

struct TrainedModel {
  std::filesystem::path dir;  // the checkpoint folder
  nlohmann::json state;       // its state.json
  TrainConfig config;         // the run's configuration
  std::string tokenizer_name;
  std::unique_ptr<Tokenizer> tokenizer;
  LlamaConfig model;  // the model's shape
  std::int64_t step = 0;
};

// A checkpoint folder, or a run folder (its latest checkpoint); Error for a missing or corrupt one.
TrainedModel read_trained_model(const std::string& checkpoint);

// `source` (empty: the data the run trained on), which must be tokenized as the model reads.
Dataset load_model_data(const TrainedModel& trained, const std::string& source);

}  // namespace quartet

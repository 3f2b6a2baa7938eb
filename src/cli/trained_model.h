// What the commands that read a trained model (`quartet eval`, `quartet diagnose`) share: the
// checkpoint's configuration and tokenizer, and data checked against that tokenizer.
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

namespace quartet::cli {

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

}  // namespace quartet::cli

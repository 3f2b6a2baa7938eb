// libFuzzer target: the checkpoint's JSON files through their public readers: config.json
// (llama_config_from_hf_json), state.json (read_checkpoint_state, then TrainConfig::from_json
// on its "config"). Only quartet::Error may come out; anything else is a finding.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "quartet/error.h"
#include "quartet/train/checkpoint.h"
#include "quartet/train/config.h"

namespace {

std::filesystem::path scratch_path() {
  return std::filesystem::temp_directory_path() / ("quartet-fuzz-ckpt-" + std::to_string(::getpid()));
}

// A folder of this process for state.json, removed when libFuzzer ends (it calls exit()).
const std::filesystem::path& scratch() {
  static const std::filesystem::path dir = [] {
    std::filesystem::create_directories(scratch_path());
    std::atexit([] { std::filesystem::remove_all(scratch_path()); });
    return scratch_path();
  }();
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_discarded()) {
    try {
      (void)quartet::llama_config_from_hf_json(j, "fuzz config.json");
    } catch (const quartet::Error&) {
    }
    try {
      if (j.is_object() && j.contains("config")) (void)quartet::TrainConfig::from_json(j["config"]);
      (void)quartet::TrainConfig::from_json(j);
    } catch (const quartet::Error&) {
    }
  }
  {
    std::ofstream(scratch() / "state.json", std::ios::binary | std::ios::trunc) << text;
  }
  try {
    (void)quartet::read_checkpoint_state(scratch());
  } catch (const quartet::Error&) {
  }
  return 0;
}

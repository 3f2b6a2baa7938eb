#include "quartet/train/trained_model.h"

#include <fmt/format.h>

#include "quartet/error.h"
#include "quartet/train/checkpoint.h"

namespace quartet {

TrainedModel read_trained_model(const std::string& checkpoint) {
  TrainedModel t;
  t.dir = resolve_checkpoint(checkpoint);
  t.state = read_checkpoint_state(t.dir);
  t.config = TrainConfig::from_json(t.state.at("config"), (t.dir / "state.json").string(), "config");
  t.tokenizer_name = t.state.at("tokenizer").get<std::string>();
  t.tokenizer = make_tokenizer(t.tokenizer_name);
  t.model = model_config(t.config, t.tokenizer->vocab_size());
  t.step = t.state.at("step").get<std::int64_t>();
  return t;
}

Dataset load_model_data(const TrainedModel& trained, const std::string& source) {
  const std::string from = source.empty() ? trained.config.data : source;
  Dataset data = load_dataset(from, trained.tokenizer_name);
  if (data.tokenizer != trained.tokenizer_name) {
    throw Error(fmt::format("--data {} is tokenized with '{}'; the checkpoint's model reads '{}' tokens", from,
                            data.tokenizer, trained.tokenizer_name));
  }
  return data;
}

}  // namespace quartet

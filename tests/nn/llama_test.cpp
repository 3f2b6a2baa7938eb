#include "quartet/nn/llama.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <utility>

#include "quartet/error.h"
#include "support/gradcheck.h"

namespace quartet {
namespace {

LlamaConfig micro_config() {
  LlamaConfig c;
  c.size = "micro";
  c.vocab_size = 11;
  c.d_model = 8;
  c.n_layers = 2;
  c.n_heads = 2;
  c.n_kv_heads = 1;
  c.ffn_hidden = 12;
  c.max_seq_len = 8;
  c.init_std = 0.5;  // large enough that every part of the network is far from linear
  return c;
}

// The whole model's backward against central differences of its loss, in double precision
// (bf16 recipe: no quantization, no rounding). Every parameter tensor is checked at up to 12
// entries chosen at random.
TEST(Llama, WholeModelGradientMatchesFiniteDifferences) {
  auto be = make_cpu_reference_backend();
  LlamaModel model(*be, micro_config(), make_recipe("bf16"), 7);
  const std::int64_t batch = 2, seq = 5;
  const std::vector<std::int32_t> tok = {1, 4, 2, 9, 0, 3, 3, 7, 10, 5};
  const std::vector<std::int32_t> tgt = {4, 2, 9, 0, -1, 3, 7, 10, 5, 6};
  Tensor tokens = be->empty({10}, DType::i32), targets = be->empty({10}, DType::i32);
  be->upload_tokens(tokens, tok);
  be->upload_tokens(targets, tgt);
  const double scale = 1.0 / 9.0;
  model.zero_grads();
  const double loss = model.forward_backward(tokens, targets, batch, seq, scale, 1);
  EXPECT_NEAR(loss, model.forward_loss(tokens, targets, batch, seq), 1e-12);
  EXPECT_GT(loss / 9, std::log(11.0) * 0.5);

  std::mt19937 gen(3);
  for (Parameter& p : model.parameters()) {
    std::vector<double> values = be->download(p.value);
    const std::vector<double> grad = be->download(p.grad);
    std::vector<std::size_t> picks(values.size());
    for (std::size_t i = 0; i < picks.size(); ++i) picks[i] = i;
    std::shuffle(picks.begin(), picks.end(), gen);
    picks.resize(std::min<std::size_t>(12, picks.size()));
    std::vector<double> analytic, numeric;
    for (std::size_t i : picks) {
      const auto f = [&](const std::vector<double>& v) {
        values[i] = v[0];
        be->upload(p.value, values);
        model.weights_changed();  // written through a reference kept across forward passes
        return model.forward_loss(tokens, targets, batch, seq) * scale;
      };
      const double original = values[i];
      numeric.push_back(testing::numeric_gradient(f, {original})[0]);
      values[i] = original;
      be->upload(p.value, values);
      model.weights_changed();
      analytic.push_back(grad[i]);
    }
    testing::expect_gradients_match(analytic, numeric, p.name, 1e-5);
  }
}

TEST(Llama, PresetsHaveThePapersShapes) {
  const LlamaConfig c30 = llama_preset("30m", 50257);
  EXPECT_EQ(c30.n_layers, 6);
  EXPECT_EQ(c30.d_model, 640);
  EXPECT_EQ(c30.n_heads, 5);
  EXPECT_EQ(c30.ffn(), 1792);  // round_up(8 * 640 / 3, 256)
  // "30M" counts the blocks without embedding and lm_head.
  EXPECT_NEAR(static_cast<double>(c30.block_parameters()), 30e6, 3e6);
  EXPECT_NEAR(static_cast<double>(llama_preset("50m", 50257).block_parameters()), 50e6, 5e6);
  EXPECT_NEAR(static_cast<double>(llama_preset("100m", 50257).block_parameters()), 100e6, 10e6);
  EXPECT_NEAR(static_cast<double>(llama_preset("200m", 50257).block_parameters()), 200e6, 20e6);
  EXPECT_NEAR(static_cast<double>(llama_preset("124m", 50257).total_parameters()), 124e6, 12e6);
  EXPECT_THROW(llama_preset("7b", 100), Error);
}

TEST(Llama, ConfigValidationNamesTheField) {
  LlamaConfig c = micro_config();
  c.n_heads = 3;
  EXPECT_THROW(c.validate(), Error);
  c = micro_config();
  c.n_kv_heads = 2;
  c.n_heads = 2;
  c.d_model = 6;  // head dim 3 is odd
  EXPECT_THROW(c.validate(), Error);
  c = micro_config();
  c.bf16_blocks_first = 2;
  c.bf16_blocks_last = 1;
  try {
    c.validate();
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bf16 blocks"), std::string::npos);
  }
}

TEST(Llama, ModelsTooLargeForTheMachineAreRefusedBeforeAllocating) {
  // A checkpoint or flags may name any size: a count that overflows, or a model that cannot fit,
  // is an error before the first allocation (which would otherwise fail halfway, or never end).
  auto be = make_cpu_backend();
  ASSERT_GT(be->memory_bytes(), std::int64_t{1} << 20) << "the CPU backend knows the machine's memory";
  LlamaConfig huge = llama_preset("tiny", 257);
  huge.d_model = 1 << 16;
  huge.n_heads = 512;
  huge.n_kv_heads = 512;
  huge.n_layers = 1 << 12;  // about 2e14 parameters: 2 PB of values and gradients
  try {
    LlamaModel model(*be, huge, make_recipe("bf16"), 1);
    FAIL() << "a 2e14-parameter model was built";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("GiB"), std::string::npos) << e.what();
  }
  LlamaConfig overflowing = huge;
  overflowing.d_model = 1 << 20;
  overflowing.n_heads = 1 << 10;
  overflowing.n_kv_heads = 1 << 10;
  overflowing.ffn_hidden = 1 << 22;
  overflowing.n_layers = 1 << 16;
  overflowing.vocab_size = 1 << 24;  // still within each limit; the count alone is ~2^60
  EXPECT_NO_THROW((void)overflowing.ffn());
  try {
    overflowing.validate();
    const std::int64_t n = overflowing.total_parameters();
    EXPECT_GT(n, std::int64_t{1} << 59) << "a count that does not overflow must be exact";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("overflows"), std::string::npos) << e.what();
  }
  LlamaConfig beyond = llama_preset("tiny", 257);
  beyond.d_model = std::int64_t{1} << 40;
  beyond.n_heads = 1;
  beyond.n_kv_heads = 1;
  try {
    beyond.validate();
    FAIL() << "d_model 2^40 was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("d_model"), std::string::npos) << e.what();
  }
}

TEST(Llama, EveryRecipeRunsAndQuantizedActivationsAreSmall) {
  auto be = make_cpu_backend();
  const LlamaConfig c = llama_preset("tiny", 257);
  std::vector<std::int32_t> tok(256), tgt(256);
  for (int i = 0; i < 256; ++i) {
    tok[i] = (i * 37) % 257;
    tgt[i] = (i * 37 + 1) % 257;
  }
  Tensor tokens = be->empty({256}, DType::i32), targets = be->empty({256}, DType::i32);
  be->upload_tokens(tokens, tok);
  be->upload_tokens(targets, tgt);
  std::size_t bf16_bytes = 0, quartet2_bytes = 0;
  for (const std::string& name : recipe_names()) {
    LlamaModel model(*be, c, make_recipe(name), 1);
    const double loss = model.forward_backward(tokens, targets, 2, 128, 1.0 / 256, 1);
    EXPECT_NEAR(loss / 256, std::log(257.0), 0.1) << name << ": an untrained model predicts uniformly";
    for (Parameter& p : model.parameters()) EXPECT_TRUE(be->all_finite(p.grad)) << name << " " << p.name;
    if (name == "bf16") bf16_bytes = model.last_linear_activation_bytes();
    if (name == "quartet2") quartet2_bytes = model.last_linear_activation_bytes();
  }
  EXPECT_LE(static_cast<double>(quartet2_bytes), 0.3 * static_cast<double>(bf16_bytes));
}

// The BF16 copies that BF16 GEMMs read follow the weights: refreshed after any parameters()
// access, or after weights_changed() when a kept reference is written after a forward pass. A
// zero LM head makes the logits zero, so the loss is exactly rows * ln(vocab).
TEST(Llama, Bf16WeightCopiesFollowTheWeights) {
  auto be = make_cpu_backend();
  LlamaModel model(*be, llama_preset("tiny", 257), make_recipe("bf16"), 1);
  std::vector<std::int32_t> tok(64), tgt(64);
  for (int i = 0; i < 64; ++i) {
    tok[static_cast<std::size_t>(i)] = (i * 37) % 257;
    tgt[static_cast<std::size_t>(i)] = (i * 37 + 1) % 257;
  }
  Tensor tokens = be->empty({64}, DType::i32), targets = be->empty({64}, DType::i32);
  be->upload_tokens(tokens, tok);
  be->upload_tokens(targets, tgt);
  const double uniform = 64 * std::log(257.0);
  Parameter& head = model.parameter("lm_head.weight");
  EXPECT_GT(std::fabs(model.forward_loss(tokens, targets, 1, 64) - uniform), 1e-3);
  be->fill(head.value, 0.0);  // through a reference kept across the forward pass
  model.weights_changed();
  EXPECT_NEAR(model.forward_loss(tokens, targets, 1, 64), uniform, 1e-3);
  std::vector<double> varied(static_cast<std::size_t>(head.value.numel()));
  for (std::size_t i = 0; i < varied.size(); ++i) varied[i] = 0.05 * static_cast<double>(static_cast<int>(i * 7919 % 13) - 6);
  be->upload(model.parameter("lm_head.weight").value, varied);  // a fresh access marks them stale itself
  EXPECT_GT(std::fabs(model.forward_loss(tokens, targets, 1, 64) - uniform), 1e-3);
}

// The hook a data-parallel step reduces gradient buckets from: forward_backward tells each of
// backward_groups() once, in order, when the group's gradients are final: a snapshot of every
// gradient taken at each call equals, for the groups told so far, the gradients after the pass
// (on the synchronous CPU the values are there when told). The groups hold every parameter
// once and walk the flat buffer from its end to its start. Without the hook the pass computes
// the same bits.
TEST(Llama, GradientsReadyTellsEachGroupOnceItsGradientsAreFinal) {
  auto be = make_cpu_backend();
  LlamaConfig c = micro_config();
  c.n_layers = 3;
  LlamaModel model(*be, c, make_recipe("bf16"), 7);
  const std::vector<std::vector<std::size_t>>& groups = model.backward_groups();
  ASSERT_EQ(groups.size(), static_cast<std::size_t>(c.n_layers + 2));
  std::vector<int> seen(model.parameters().size(), 0);
  std::int64_t previous_start = model.flat().grads.numel();
  for (const std::vector<std::size_t>& g : groups) {
    std::int64_t start = previous_start;
    for (std::size_t i : g) {
      ++seen.at(i);
      start = std::min(start, model.flat().segments[i].offset);
      EXPECT_LT(model.flat().segments[i].offset, previous_start) << "parameter " << i;
    }
    EXPECT_LT(start, previous_start);
    previous_start = start;
  }
  for (std::size_t i = 0; i < seen.size(); ++i) EXPECT_EQ(seen[i], 1) << model.parameters()[i].name;

  struct Snapshots : GradientsReady {
    Backend* be = nullptr;
    LlamaModel* model = nullptr;
    std::vector<std::size_t> told;
    std::vector<std::vector<std::vector<double>>> grads;  // per call, per parameter
    void ready(std::size_t group) override {
      told.push_back(group);
      std::vector<std::vector<double>> now;
      for (const Parameter& p : std::as_const(*model).parameters()) now.push_back(be->download(p.grad));
      grads.push_back(now);
    }
  } hook;
  hook.be = be.get();
  hook.model = &model;
  const std::vector<std::int32_t> tok = {1, 4, 2, 9, 0, 3, 3, 7, 10, 5};
  const std::vector<std::int32_t> tgt = {4, 2, 9, 0, -1, 3, 7, 10, 5, 6};
  Tensor tokens = be->empty({10}, DType::i32), targets = be->empty({10}, DType::i32);
  be->upload_tokens(tokens, tok);
  be->upload_tokens(targets, tgt);
  Tensor loss = be->zeros({1}, DType::f64);
  model.zero_grads();
  model.forward_backward(tokens, targets, 2, 5, 0.1, 1, loss, nullptr, &hook);
  const std::vector<double> with_hook = be->download(model.flat().grads);
  ASSERT_EQ(hook.told.size(), groups.size());
  for (std::size_t call = 0; call < hook.told.size(); ++call) {
    EXPECT_EQ(hook.told[call], call);
    for (std::size_t g = 0; g <= call; ++g) {
      for (std::size_t i : groups[g]) {
        EXPECT_EQ(hook.grads[call][i], be->download(model.parameters()[i].grad))
            << model.parameters()[i].name << " changed after group " << g << " was told final (call " << call << ")";
      }
    }
  }
  // Before the first group is told, no gradient of a later group has been written yet: the
  // snapshot would not have caught a group told too early otherwise.
  for (std::size_t i : groups.back()) {
    EXPECT_NE(hook.grads[0][i], be->download(model.parameters()[i].grad)) << "the embedding at the first call";
  }
  model.zero_grads();
  model.forward_backward(tokens, targets, 2, 5, 0.1, 1, loss);
  EXPECT_EQ(be->download(model.flat().grads), with_hook);
}

}  // namespace
}  // namespace quartet

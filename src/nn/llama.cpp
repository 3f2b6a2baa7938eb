#include "quartet/nn/llama.h"

#include <fmt/format.h>

#include <cmath>

#include "quartet/error.h"
#include "quartet/util/checked.h"
#include "quartet/numerics/philox.h"
#include "quartet/numerics/quantizer.h"

namespace quartet {

namespace {

std::int64_t round_up_to(std::int64_t v, std::int64_t m) { return (v + m - 1) / m * m; }

// Deterministic N(0, std^2) values from Philox (Box-Muller in double), independent of the
// backend and of thread counts.
std::vector<double> normal_values(std::uint64_t seed, std::uint32_t stream, std::int64_t n, double std_dev) {
  std::vector<double> v(static_cast<std::size_t>(n));
  const RandomContext ctx{seed, stream, 0};
  // Each pair depends only on its index: the same values for any thread count.
#pragma omp parallel for schedule(static) if (n > (1 << 16))
  for (std::int64_t i = 0; i < n; i += 2) {
    const PhiloxWords w = philox_block(ctx, static_cast<std::uint32_t>(i >> 32), static_cast<std::uint32_t>(i / 2));
    const double u1 = (static_cast<double>(w.x) + 0.5) * 0x1p-32, u2 = (static_cast<double>(w.y) + 0.5) * 0x1p-32;
    const double r = std::sqrt(-2.0 * std::log(u1)) * std_dev;
    v[static_cast<std::size_t>(i)] = r * std::cos(2 * M_PI * u2);
    if (i + 1 < n) v[static_cast<std::size_t>(i + 1)] = r * std::sin(2 * M_PI * u2);
  }
  return v;
}

constexpr std::uint32_t kInitStreamBase = 0x1A1A0000u;
constexpr std::uint32_t kLinearsPerLayer = 4;  // qkv, o, gate_up, down
constexpr const char* kLinearNames[kLinearsPerLayer] = {"qkv_proj", "o_proj", "gate_up_proj", "down_proj"};

// The hook of linear `which` of block `layer` (nothing when there is no probe).
LinearProbeHook probe_hook(LinearProbe* probe, std::int64_t layer, std::uint32_t which) {
  if (!probe) return {};
  return {probe, fmt::format("layers.{}.{}", layer, kLinearNames[which])};
}

}  // namespace

std::int64_t LlamaConfig::ffn() const { return ffn_hidden > 0 ? ffn_hidden : round_up_to(8 * d_model / 3, 256); }

// Sizes come from flags and files: every product is checked (an overflow is an Error naming the
// model, never a wrapped count).
std::int64_t LlamaConfig::block_parameters() const {
  const std::int64_t hd = head_dim();
  const char* what = "the model's parameter count";
  const std::int64_t attention = checked_add(checked_product(what, n_heads + 2 * n_kv_heads, hd, d_model),
                                             checked_product(what, d_model, n_heads, hd), what);
  const std::int64_t per_layer = checked_add(checked_add(2 * d_model, attention, what), checked_product(what, 3, ffn(), d_model), what);
  return checked_add(checked_mul(n_layers, per_layer, what), d_model, what);
}

std::int64_t LlamaConfig::total_parameters() const {
  return checked_add(block_parameters(), checked_product("the model's parameter count", 2, vocab_size, d_model),
                     "the model's parameter count");
}

void LlamaConfig::validate() const {
  const auto fail = [&](const std::string& why) { throw Error(fmt::format("model config ({}): {}", size, why)); };
  if (vocab_size < 2 || vocab_size > (1 << 24)) fail(fmt::format("vocab_size must be in [2, 2^24], got {}", vocab_size));
  if (d_model < 2 || n_layers < 1 || n_heads < 1 || n_kv_heads < 1) {
    fail(fmt::format("d_model {}, n_layers {}, n_heads {}, n_kv_heads {} must all be positive", d_model, n_layers,
                     n_heads, n_kv_heads));
  }
  if (d_model % n_heads != 0) fail(fmt::format("d_model {} is not a multiple of n_heads {}", d_model, n_heads));
  if (head_dim() % 2 != 0) fail(fmt::format("the head dimension {} must be even for RoPE", head_dim()));
  if (n_heads % n_kv_heads != 0) fail(fmt::format("n_heads {} is not a multiple of n_kv_heads {}", n_heads, n_kv_heads));
  if (ffn_hidden < 0) fail(fmt::format("ffn_hidden must be positive (or 0 for the default), got {}", ffn_hidden));
  if (max_seq_len < 1) fail(fmt::format("max_seq_len must be positive, got {}", max_seq_len));
  if (!(rope_theta > 0) || !(rms_norm_eps > 0) || !(init_std > 0)) fail("rope_theta, rms_norm_eps and init_std must be positive");
  if (bf16_blocks_first < 0 || bf16_blocks_last < 0 || bf16_blocks_first + bf16_blocks_last > n_layers) {
    fail(fmt::format("bf16 blocks first:{} last:{} do not fit in {} layers", bf16_blocks_first, bf16_blocks_last, n_layers));
  }
  if (d_model > (std::int64_t{1} << 20) || ffn() > (std::int64_t{1} << 22) || n_layers > (std::int64_t{1} << 16) ||
      max_seq_len > (std::int64_t{1} << 24)) {
    fail(fmt::format("d_model {}, ffn {}, n_layers {} or max_seq_len {} is beyond what any machine can train "
                     "(limits 2^20, 2^22, 2^16, 2^24)",
                     d_model, ffn(), n_layers, max_seq_len));
  }
  try {
    (void)total_parameters();
  } catch (const Error& e) {
    fail(e.what());
  }
}

const std::vector<std::string>& llama_preset_names() {
  static const std::vector<std::string> names = {"tiny", "30m", "50m", "100m", "124m", "200m", "1b"};
  return names;
}

LlamaConfig llama_preset(const std::string& size, std::int64_t vocab_size) {
  LlamaConfig c;
  c.size = size;
  c.vocab_size = vocab_size;
  const auto set = [&](std::int64_t layers, std::int64_t d, std::int64_t heads, std::int64_t kv, std::int64_t seq) {
    c.n_layers = layers;
    c.d_model = d;
    c.n_heads = heads;
    c.n_kv_heads = kv;
    c.max_seq_len = seq;
  };
  if (size == "tiny") {
    set(2, 128, 4, 2, 256);
  } else if (size == "30m") {
    set(6, 640, 5, 5, 1024);
  } else if (size == "50m") {
    set(7, 768, 6, 6, 1024);
  } else if (size == "100m") {
    set(8, 1024, 8, 8, 1024);
  } else if (size == "124m") {
    set(12, 640, 10, 10, 1024);  // ~125M parameters in all with the GPT-2 vocabulary
  } else if (size == "200m") {
    set(10, 1280, 10, 10, 1024);
  } else if (size == "1b") {
    set(18, 2048, 16, 16, 2048);  // head dim 128, ffn 5632: ~0.93B in blocks, ~1.1B with the GPT-2 vocabulary
  } else {
    throw Error(fmt::format("unknown model size '{}'; expected one of: {}", size, fmt::join(llama_preset_names(), ", ")));
  }
  c.validate();
  return c;
}

void check_recipe_fits(const LlamaConfig& c, const Recipe& r, std::int64_t tokens) {
  const std::int64_t hd = c.head_dim();
  const struct {
    const char* name;
    std::int64_t k, n;
  } linears[] = {{"qkv_proj", c.d_model, (c.n_heads + 2 * c.n_kv_heads) * hd},
                 {"o_proj", c.n_heads * hd, c.d_model},
                 {"gate_up_proj", c.d_model, 2 * c.ffn()},
                 {"down_proj", c.ffn(), c.d_model}};
  const auto check = [&](const char* layer, const char* gemm, const char* dim, std::int64_t size, int rotation) {
    if (rotation > 0 && size % rotation != 0) {
      throw Error(fmt::format("recipe {} rotates the {} GEMM of {} with RHT-{} along {} = {}, which is not a multiple of "
                              "{}",
                              r.name, gemm, layer, rotation, dim, size, rotation));
    }
  };
  for (const auto& l : linears) {
    check(l.name, "forward", "its input features", l.k, r.fwd_x.rotation);
    check(l.name, "dgrad", "its output features", l.n, r.dgrad_e.rotation);
    check(l.name, "wgrad", "the tokens per micro-batch (batch x seq)", tokens, r.wgrad_et.rotation);
  }
}

struct LlamaModel::Activations {
  struct Block {
    Tensor x_in, rstd_attn, qkv, x_mid, rstd_mlp, gate_up;
    AttentionSaved attention;
    LinearSaved lin_qkv, lin_o, lin_gate_up, lin_down;
  };
  std::vector<Block> blocks;
  Tensor x_final, rstd_final, normed_final, logits;
  AttentionShape shape;
};

LlamaModel::LlamaModel(Backend& backend, LlamaConfig config, Recipe recipe, std::uint64_t seed,
                       std::int64_t flat_multiple)
    : backend_(backend), config_(std::move(config)), recipe_(std::move(recipe)), bf16_recipe_(make_recipe("bf16")),
      seed_(seed) {
  config_.validate();
  recipe_.validate();
  const LlamaConfig& c = config_;
  // Before anything is allocated: the parameters' FP32 values and gradients and their BF16 copies
  // (10 bytes each; AdamW adds 8 more) must fit in the backend's memory, or the error says so
  // instead of an allocation failure halfway through.
  const std::int64_t memory = backend.memory_bytes();
  const double needed = 10.0 * static_cast<double>(c.total_parameters());
  if (memory > 0 && needed > static_cast<double>(memory)) {
    throw Error(fmt::format("model {} has {} parameters: their values, gradients and BF16 copies need {:.1f} GiB, more "
                            "than the {:.1f} GiB of the {} backend",
                            c.size, c.total_parameters(), needed / 1073741824.0, static_cast<double>(memory) / 1073741824.0,
                            backend.name()));
  }
  const std::int64_t d = c.d_model, hd = c.head_dim();
  struct Spec {
    std::string name;
    Shape shape;
    double std_dev;  // 0: a norm weight, initialised to 1
  };
  std::vector<Spec> specs;
  const double out_std = c.init_std / std::sqrt(2.0 * static_cast<double>(c.n_layers));
  specs.push_back({"model.embed_tokens.weight", {c.vocab_size, d}, c.init_std});
  for (std::int64_t l = 0; l < c.n_layers; ++l) {
    const std::string p = fmt::format("model.layers.{}.", l);
    specs.push_back({p + "input_layernorm.weight", {d}, 0});
    specs.push_back({p + "self_attn.qkv_proj.weight", {(c.n_heads + 2 * c.n_kv_heads) * hd, d}, c.init_std});
    specs.push_back({p + "self_attn.o_proj.weight", {d, c.n_heads * hd}, out_std});
    specs.push_back({p + "post_attention_layernorm.weight", {d}, 0});
    specs.push_back({p + "mlp.gate_up_proj.weight", {2 * c.ffn(), d}, c.init_std});
    specs.push_back({p + "mlp.down_proj.weight", {d, c.ffn()}, out_std});
  }
  specs.push_back({"model.norm.weight", {d}, 0});
  specs.push_back({"lm_head.weight", {c.vocab_size, d}, c.init_std});

  // The LM head's storage has room for padded_vocab_ rows, the rows beyond the vocabulary zero
  // and outside its segment: GEMMs over the padded head (and logits) get aligned dimensions.
  padded_vocab_ = round_up_to(c.vocab_size, backend_.preferred_gemm_multiple());
  std::int64_t total = 0;
  for (const Spec& spec : specs) {
    const std::int64_t n = shape_numel(spec.shape);
    const bool head = &spec == &specs.back();
    flat_.segments.push_back(ParameterSegment{total, n, spec.shape.size() == 2});
    total += round_up_to(head ? padded_vocab_ * d : n, FlatParameters::kSegmentAlignment);
  }
  if (flat_multiple < 1) throw Error(fmt::format("the flat buffers' size multiple must be >= 1, got {}", flat_multiple));
  total = round_up_to(total, flat_multiple);  // zero padding after the last segment (sharding)
  flat_.values = backend_.zeros({total}, backend_.param_dtype());
  flat_.grads = backend_.zeros({total}, backend_.param_dtype());
  flat_.values_bf16 = backend_.empty({total}, DType::bf16);
  for (std::size_t i = 0; i < specs.size(); ++i) {
    const Spec& spec = specs[i];
    const ParameterSegment& seg = flat_.segments[i];
    Parameter p;
    p.name = spec.name;
    p.value = flat_.values.view(seg.offset, spec.shape);
    p.grad = flat_.grads.view(seg.offset, spec.shape);
    p.value_bf16 = flat_.values_bf16.view(seg.offset, spec.shape);
    p.decay = seg.decay;
    if (spec.std_dev > 0) {
      backend_.upload(p.value, normal_values(seed, kInitStreamBase + static_cast<std::uint32_t>(i), seg.count, spec.std_dev));
    } else {
      backend_.fill(p.value, 1.0);
    }
    params_.push_back(std::move(p));
  }
  std::size_t next = 0;
  embed_ = next++;
  for (std::int64_t l = 0; l < c.n_layers; ++l) {
    Layer layer{};
    layer.attn_norm = next++;
    layer.qkv = next++;
    layer.o = next++;
    layer.mlp_norm = next++;
    layer.gate_up = next++;
    layer.down = next++;
    layers_.push_back(layer);
  }
  final_norm_ = next++;
  lm_head_ = next++;
  backward_groups_.push_back({final_norm_, lm_head_});
  for (std::int64_t l = c.n_layers - 1; l >= 0; --l) {
    const Layer& L = layers_[static_cast<std::size_t>(l)];
    backward_groups_.push_back({L.attn_norm, L.qkv, L.o, L.mlp_norm, L.gate_up, L.down});
  }
  backward_groups_.push_back({embed_});
  refresh_bf16_weights();
}

std::vector<Parameter>& LlamaModel::parameters() {
  bf16_fresh_ = false;
  return params_;
}

Parameter& LlamaModel::parameter(const std::string& name) {
  for (Parameter& p : parameters()) {
    if (p.name == name) return p;
  }
  throw Error(fmt::format("the model has no parameter '{}'", name));
}

FlatParameters& LlamaModel::flat() {
  bf16_fresh_ = false;
  return flat_;
}

void LlamaModel::refresh_bf16_weights() {
  backend_.copy(flat_.values_bf16, flat_.values);
  bf16_fresh_ = true;
}

void LlamaModel::zero_grads() { backend_.fill(flat_.grads, 0.0); }

// BF16 GEMMs and the embedding read the BF16 copies where activations are BF16 (the same values
// the GEMM's rounding would make); the FP64 reference backend rounds nothing.
const Tensor& LlamaModel::gemm_weight(std::size_t i) const {
  return backend_.activation_dtype() == DType::bf16 ? params_[i].value_bf16 : params_[i].value;
}

// The LM head as [padded_vocab, d] in `bf16_buffer` where activations are BF16 (what the GEMMs
// read), else in `exact_buffer` (the FP64 reference backend rounds nothing, and pads nothing).
Tensor LlamaModel::padded_head(const Tensor& bf16_buffer, const Tensor& exact_buffer) const {
  const bool bf16 = backend_.activation_dtype() == DType::bf16;
  return (bf16 ? bf16_buffer : exact_buffer).view(flat_.segments[lm_head_].offset, {padded_vocab_, config_.d_model});
}

const Recipe& LlamaModel::recipe_for(std::int64_t layer) const {
  const bool bf16 = layer < config_.bf16_blocks_first || layer >= config_.n_layers - config_.bf16_blocks_last;
  return bf16 ? bf16_recipe_ : recipe_;
}

// Each residual add runs fused with the norm that follows it: a block's second add with the
// next block's attention norm (or the final norm), so the stream is read once per norm.
bool LlamaModel::quantizes_any_linear() const {
  for (std::int64_t l = 0; l < config_.n_layers; ++l) {
    if (recipe_for(l).quantizes_forward() || recipe_for(l).quantizes_backward()) return true;
  }
  return false;
}

void LlamaModel::forward(const Tensor& tokens, std::int64_t batch, std::int64_t seq, std::uint32_t call, Activations& a,
                         LinearProbe* probe) {
  const LlamaConfig& c = config_;
  if (batch < 1 || seq < 1 || seq > c.max_seq_len) {
    throw Error(fmt::format("forward: batch {} x sequence {} (the model's maximum sequence length is {})", batch, seq,
                            c.max_seq_len));
  }
  if (!bf16_fresh_) refresh_bf16_weights();
  const std::int64_t n = batch * seq, d = c.d_model;
  tokens.expect("model input tokens", {n}, DType::i32);
  const DType act = backend_.activation_dtype(), pd = backend_.param_dtype();
  a.shape = AttentionShape{batch, seq, c.n_heads, c.n_kv_heads, c.head_dim(), c.rope_theta};
  a.blocks.assign(static_cast<std::size_t>(c.n_layers), {});
  const auto weight = [&](std::size_t i) -> const Tensor& { return params_[i].value; };

  Tensor x = backend_.empty({n, d}, act);
  backend_.embedding_forward(x, tokens, gemm_weight(embed_));
  Tensor h = backend_.empty({n, d}, act);
  a.blocks[0].rstd_attn = backend_.empty({n}, pd);
  backend_.rmsnorm_forward(h, a.blocks[0].rstd_attn, x, weight(layers_[0].attn_norm), c.rms_norm_eps);
  for (std::int64_t l = 0; l < c.n_layers; ++l) {
    const Layer& L = layers_[static_cast<std::size_t>(l)];
    const Recipe& r = recipe_for(l);
    Activations::Block& b = a.blocks[static_cast<std::size_t>(l)];
    const auto random = [&](std::uint32_t which) {
      return LinearRandom{seed_, static_cast<std::uint32_t>(l) * kLinearsPerLayer + which, call};
    };
    b.x_in = x;
    b.qkv = backend_.empty({n, a.shape.qkv_width()}, act);
    linear_forward(backend_, r, h, weight(L.qkv), b.qkv, b.lin_qkv, random(0), gemm_weight(L.qkv),
                   probe_hook(probe, l, 0));
    Tensor att = backend_.empty({n, a.shape.q_width()}, act);
    backend_.attention_forward(att, b.attention, b.qkv, a.shape);
    Tensor o = backend_.empty({n, d}, act);
    linear_forward(backend_, r, att, weight(L.o), o, b.lin_o, random(1), gemm_weight(L.o),
                   probe_hook(probe, l, 1));

    b.x_mid = backend_.empty({n, d}, act);
    b.rstd_mlp = backend_.empty({n}, pd);
    Tensor h2 = backend_.empty({n, d}, act);
    backend_.residual_rmsnorm_forward(b.x_mid, h2, b.rstd_mlp, b.x_in, o, weight(L.mlp_norm), c.rms_norm_eps);
    b.gate_up = backend_.empty({n, 2 * c.ffn()}, act);
    linear_forward(backend_, r, h2, weight(L.gate_up), b.gate_up, b.lin_gate_up, random(2), gemm_weight(L.gate_up),
                   probe_hook(probe, l, 2));
    Tensor s = backend_.empty({n, c.ffn()}, act);
    backend_.swiglu_forward(s, b.gate_up);
    Tensor down = backend_.empty({n, d}, act);
    linear_forward(backend_, r, s, weight(L.down), down, b.lin_down, random(3), gemm_weight(L.down),
                   probe_hook(probe, l, 3));

    const bool last = l + 1 == c.n_layers;
    Tensor& next_rstd = last ? a.rstd_final : a.blocks[static_cast<std::size_t>(l + 1)].rstd_attn;
    next_rstd = backend_.empty({n}, pd);
    x = backend_.empty({n, d}, act);
    h = backend_.empty({n, d}, act);
    backend_.residual_rmsnorm_forward(x, h, next_rstd, b.x_mid, down,
                                      weight(last ? final_norm_ : layers_[static_cast<std::size_t>(l + 1)].attn_norm),
                                      c.rms_norm_eps);
  }
  a.x_final = x;
  a.normed_final = h;
  a.logits = backend_.empty({n, padded_vocab_}, act);
  backend_.gemm(a.logits, a.normed_final, false, padded_head(flat_.values_bf16, flat_.values), false, false);
}

void LlamaModel::forward_backward(const Tensor& tokens, const Tensor& targets, std::int64_t batch, std::int64_t seq,
                                  double grad_scale, std::uint32_t call, Tensor& loss_sum, LinearProbe* probe,
                                  GradientsReady* ready) {
  std::size_t group = 0;  // backward_groups_ in order
  const auto group_done = [&]() {
    if (ready != nullptr) ready->ready(group);
    ++group;
  };
  const LlamaConfig& c = config_;
  Activations a;
  forward(tokens, batch, seq, call, a, probe);
  const std::int64_t n = batch * seq, d = c.d_model;
  const DType act = backend_.activation_dtype();
  const auto weight = [&](std::size_t i) -> const Tensor& { return params_[i].value; };
  const auto grad = [&](std::size_t i) -> Tensor& { return params_[i].grad; };

  // The loss gradient overwrites the logits buffer (dlogits aliases logits).
  backend_.cross_entropy(a.logits, a.logits, targets, c.vocab_size, grad_scale, loss_sum);
  Tensor& dlogits = a.logits;  // padding columns: zero gradient
  Tensor dnormed = backend_.empty({n, d}, act);
  backend_.gemm(dnormed, dlogits, false, padded_head(flat_.values_bf16, flat_.values), true, false);
  Tensor head_grad = padded_head(flat_.grads, flat_.grads);  // the padding rows get zeros
  backend_.gemm(head_grad, dlogits, true, a.normed_final, true, true);
  a.logits = Tensor{};
  Tensor dx = backend_.empty({n, d}, act);
  backend_.rmsnorm_backward(dx, grad(final_norm_), dnormed, a.x_final, weight(final_norm_), a.rstd_final, false);
  group_done();  // the LM head and the final norm

  last_linear_bytes_ = 0;
  Tensor dnorm_in = dnormed;  // reused: [n, d] gradients of the norms' outputs
  for (std::int64_t l = c.n_layers - 1; l >= 0; --l) {
    const Layer& L = layers_[static_cast<std::size_t>(l)];
    const Recipe& r = recipe_for(l);
    Activations::Block& b = a.blocks[static_cast<std::size_t>(l)];
    const auto random = [&](std::uint32_t which) {
      return LinearRandom{seed_, static_cast<std::uint32_t>(l) * kLinearsPerLayer + which, call};
    };
    last_linear_bytes_ += b.lin_qkv.activation_bytes() + b.lin_o.activation_bytes() +
                          b.lin_gate_up.activation_bytes() + b.lin_down.activation_bytes();
    // MLP half: x_out = x_mid + down(swiglu(gate_up(norm(x_mid)))); dx holds d(x_out).
    Tensor ds = backend_.empty({n, c.ffn()}, act);
    linear_backward(backend_, r, dx, weight(L.down), b.lin_down, ds, grad(L.down), random(3), gemm_weight(L.down),
                    probe_hook(probe, l, 3));
    b.lin_down = LinearSaved{};
    Tensor dgate_up = backend_.empty({n, 2 * c.ffn()}, act);
    backend_.swiglu_backward(dgate_up, ds, b.gate_up);
    ds = Tensor{};
    b.gate_up = Tensor{};
    linear_backward(backend_, r, dgate_up, weight(L.gate_up), b.lin_gate_up, dnorm_in, grad(L.gate_up), random(2),
                    gemm_weight(L.gate_up), probe_hook(probe, l, 2));
    b.lin_gate_up = LinearSaved{};
    dgate_up = Tensor{};
    backend_.rmsnorm_backward(dx, grad(L.mlp_norm), dnorm_in, b.x_mid, weight(L.mlp_norm), b.rstd_mlp, true);  // d(x_mid)

    // Attention half: x_mid = x_in + o(attention(qkv(norm(x_in)))).
    Tensor datt = backend_.empty({n, a.shape.q_width()}, act);
    linear_backward(backend_, r, dx, weight(L.o), b.lin_o, datt, grad(L.o), random(1), gemm_weight(L.o),
                    probe_hook(probe, l, 1));
    b.lin_o = LinearSaved{};
    Tensor dqkv = backend_.empty({n, a.shape.qkv_width()}, act);
    backend_.attention_backward(dqkv, datt, b.qkv, b.attention, a.shape);
    datt = Tensor{};
    b.attention = AttentionSaved{};
    b.qkv = Tensor{};
    linear_backward(backend_, r, dqkv, weight(L.qkv), b.lin_qkv, dnorm_in, grad(L.qkv), random(0), gemm_weight(L.qkv),
                    probe_hook(probe, l, 0));
    b.lin_qkv = LinearSaved{};
    backend_.rmsnorm_backward(dx, grad(L.attn_norm), dnorm_in, b.x_in, weight(L.attn_norm), b.rstd_attn, true);  // d(x_in)
    b = Activations::Block{};  // this block's activations are no longer needed
    group_done();  // block l
  }
  backend_.embedding_backward(grad(embed_), tokens, dx);
  group_done();  // the embedding
}

double LlamaModel::forward_backward(const Tensor& tokens, const Tensor& targets, std::int64_t batch, std::int64_t seq,
                                    double grad_scale, std::uint32_t call) {
  Tensor loss = backend_.zeros({1}, DType::f64);
  forward_backward(tokens, targets, batch, seq, grad_scale, call, loss);
  backend_.raise_pending_errors();
  return backend_.download(loss)[0];
}

void LlamaModel::forward_loss(const Tensor& tokens, const Tensor& targets, std::int64_t batch, std::int64_t seq,
                              Tensor& loss_sum) {
  Activations a;
  forward(tokens, batch, seq, 0, a);
  backend_.cross_entropy(a.logits, a.logits, targets, config_.vocab_size, 0.0, loss_sum);
}

double LlamaModel::forward_loss(const Tensor& tokens, const Tensor& targets, std::int64_t batch, std::int64_t seq) {
  Tensor loss = backend_.zeros({1}, DType::f64);
  forward_loss(tokens, targets, batch, seq, loss);
  backend_.raise_pending_errors();
  return backend_.download(loss)[0];
}

Tensor LlamaModel::forward_logits(const Tensor& tokens, std::int64_t batch, std::int64_t seq) {
  Activations a;
  forward(tokens, batch, seq, 0, a);
  backend_.raise_pending_errors();  // sampling must not go on from non-finite activations either
  return a.logits;
}

KvCache LlamaModel::make_kv_cache() {
  const LlamaConfig& c = config_;
  KvCache cache;
  cache.capacity = c.max_seq_len;
  const Shape shape{c.max_seq_len, c.n_kv_heads * c.head_dim()};
  for (std::int64_t l = 0; l < c.n_layers; ++l) {
    cache.keys.push_back(backend_.empty(shape, backend_.kv_cache_dtype()));
    cache.values.push_back(backend_.empty(shape, backend_.kv_cache_dtype()));
  }
  return cache;
}

std::string LlamaModel::kv_cache_mismatch() const {
  for (std::int64_t l = 0; l < config_.n_layers; ++l) {
    const Recipe& r = recipe_for(l);
    if (!r.fwd_x.quantized()) continue;
    const QuantizerKind kind = r.fwd_x.quantizer->kind;
    // NVFP4 scales each tensor by its largest value (and square16 shares tiles across 16
    // positions): the new position alone has other scales than the whole context. MXFP4 has
    // only per-row block scales; a stochastic quantizer would draw other bits per position.
    if (quantizer_format(kind) == ElementFormat::nvfp4) {
      return fmt::format("recipe {} quantizes activations to NVFP4 ({}) with a scale shared by all positions of the "
                         "context, so one position at a time gives other logits",
                         r.name, quantizer_name(kind));
    }
    if (is_stochastic(kind)) {
      return fmt::format("recipe {} quantizes activations stochastically ({}), with random bits that depend on the "
                         "position's row in the pass",
                         r.name, quantizer_name(kind));
    }
  }
  return "";
}

// forward() for the new positions only: the same operations in the same order, with attention
// reading the earlier positions from the cache, and the LM head on the last position alone.
Tensor LlamaModel::forward_cached(const Tensor& tokens, std::int64_t seq, KvCache& cache) {
  const LlamaConfig& c = config_;
  if (seq < 1 || cache.length < 0 || seq > cache.capacity - cache.length) {
    throw Error(fmt::format("forward_cached: {} new positions after the {} in the cache pass its capacity of {} (the "
                            "model's maximum sequence length is {})",
                            seq, cache.length, cache.capacity, c.max_seq_len));
  }
  if (static_cast<std::int64_t>(cache.keys.size()) != c.n_layers || cache.values.size() != cache.keys.size()) {
    throw Error(fmt::format("forward_cached: the cache has {} layers of keys and {} of values, the model {} layers",
                            cache.keys.size(), cache.values.size(), c.n_layers));
  }
  if (!bf16_fresh_) refresh_bf16_weights();
  const std::int64_t n = seq, d = c.d_model;
  tokens.expect("model input tokens", {n}, DType::i32);
  const DType act = backend_.activation_dtype(), pd = backend_.param_dtype();
  const AttentionShape shape{1, seq, c.n_heads, c.n_kv_heads, c.head_dim(), c.rope_theta};
  const auto weight = [&](std::size_t i) -> const Tensor& { return params_[i].value; };
  constexpr std::uint32_t call = 0;  // forward_logits' call: the same random streams

  Tensor x = backend_.empty({n, d}, act);
  backend_.embedding_forward(x, tokens, gemm_weight(embed_));
  Tensor h = backend_.empty({n, d}, act);
  Tensor rstd = backend_.empty({n}, pd);
  backend_.rmsnorm_forward(h, rstd, x, weight(layers_[0].attn_norm), c.rms_norm_eps);
  LinearSaved unused;
  for (std::int64_t l = 0; l < c.n_layers; ++l) {
    const Layer& L = layers_[static_cast<std::size_t>(l)];
    const Recipe& r = recipe_for(l);
    const auto random = [&](std::uint32_t which) {
      return LinearRandom{seed_, static_cast<std::uint32_t>(l) * kLinearsPerLayer + which, call};
    };
    Tensor qkv = backend_.empty({n, shape.qkv_width()}, act);
    linear_forward(backend_, r, h, weight(L.qkv), qkv, unused, random(0), gemm_weight(L.qkv));
    Tensor att = backend_.empty({n, shape.q_width()}, act);
    backend_.attention_forward_cached(att, cache.keys[static_cast<std::size_t>(l)],
                                      cache.values[static_cast<std::size_t>(l)], qkv, shape, cache.length);
    Tensor o = backend_.empty({n, d}, act);
    linear_forward(backend_, r, att, weight(L.o), o, unused, random(1), gemm_weight(L.o));

    Tensor x_mid = backend_.empty({n, d}, act);
    Tensor h2 = backend_.empty({n, d}, act);
    backend_.residual_rmsnorm_forward(x_mid, h2, rstd, x, o, weight(L.mlp_norm), c.rms_norm_eps);
    Tensor gate_up = backend_.empty({n, 2 * c.ffn()}, act);
    linear_forward(backend_, r, h2, weight(L.gate_up), gate_up, unused, random(2), gemm_weight(L.gate_up));
    Tensor s = backend_.empty({n, c.ffn()}, act);
    backend_.swiglu_forward(s, gate_up);
    Tensor down = backend_.empty({n, d}, act);
    linear_forward(backend_, r, s, weight(L.down), down, unused, random(3), gemm_weight(L.down));

    const bool last = l + 1 == c.n_layers;
    x = backend_.empty({n, d}, act);
    h = backend_.empty({n, d}, act);
    backend_.residual_rmsnorm_forward(x, h, rstd, x_mid, down,
                                      weight(last ? final_norm_ : layers_[static_cast<std::size_t>(l + 1)].attn_norm),
                                      c.rms_norm_eps);
  }
  cache.length += seq;
  Tensor logits = backend_.empty({1, padded_vocab_}, act);
  backend_.gemm(logits, h.view((n - 1) * d, {1, d}), false, padded_head(flat_.values_bf16, flat_.values), false, false);
  backend_.raise_pending_errors();  // sampling must not go on from non-finite activations either
  return logits;
}

}  // namespace quartet

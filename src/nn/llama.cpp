#include "quartet/nn/llama.h"

#include <fmt/format.h>

#include <cmath>

#include "quartet/error.h"
#include "quartet/numerics/philox.h"

namespace quartet {

namespace {

std::int64_t round_up_to(std::int64_t v, std::int64_t m) { return (v + m - 1) / m * m; }

// Deterministic N(0, std^2) values from Philox (Box-Muller in double), independent of the
// backend and of thread counts.
std::vector<double> normal_values(std::uint64_t seed, std::uint32_t stream, std::int64_t n, double std_dev) {
  std::vector<double> v(static_cast<std::size_t>(n));
  const RandomContext ctx{seed, stream, 0};
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

}  // namespace

std::int64_t LlamaConfig::ffn() const { return ffn_hidden > 0 ? ffn_hidden : round_up_to(8 * d_model / 3, 256); }

std::int64_t LlamaConfig::block_parameters() const {
  const std::int64_t hd = head_dim();
  const std::int64_t per_layer = 2 * d_model + (n_heads + 2 * n_kv_heads) * hd * d_model + d_model * n_heads * hd +
                                 3 * ffn() * d_model;
  return n_layers * per_layer + d_model;
}

std::int64_t LlamaConfig::total_parameters() const { return block_parameters() + 2 * vocab_size * d_model; }

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
}

const std::vector<std::string>& llama_preset_names() {
  static const std::vector<std::string> names = {"tiny", "30m", "50m", "100m", "124m", "200m"};
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

LlamaModel::LlamaModel(Backend& backend, LlamaConfig config, Recipe recipe, std::uint64_t seed)
    : backend_(backend), config_(std::move(config)), recipe_(std::move(recipe)), bf16_recipe_(make_recipe("bf16")),
      seed_(seed) {
  config_.validate();
  recipe_.validate();
  const LlamaConfig& c = config_;
  const std::int64_t d = c.d_model, hd = c.head_dim();
  const auto add = [&](const std::string& name, const Shape& shape, double std_dev) {
    Parameter p;
    p.name = name;
    p.value = backend_.empty(shape, backend_.param_dtype());
    p.grad = backend_.zeros(shape, backend_.param_dtype());
    p.decay = shape.size() == 2;
    if (std_dev > 0) {
      backend_.upload(p.value, normal_values(seed, kInitStreamBase + static_cast<std::uint32_t>(params_.size()),
                                             shape_numel(shape), std_dev));
    } else {
      backend_.fill(p.value, 1.0);  // norm weights
    }
    params_.push_back(std::move(p));
    return params_.size() - 1;
  };
  const double out_std = c.init_std / std::sqrt(2.0 * static_cast<double>(c.n_layers));
  embed_ = add("model.embed_tokens.weight", {c.vocab_size, d}, c.init_std);
  for (std::int64_t l = 0; l < c.n_layers; ++l) {
    const std::string p = fmt::format("model.layers.{}.", l);
    Layer layer{};
    layer.attn_norm = add(p + "input_layernorm.weight", {d}, 0);
    layer.qkv = add(p + "self_attn.qkv_proj.weight", {(c.n_heads + 2 * c.n_kv_heads) * hd, d}, c.init_std);
    layer.o = add(p + "self_attn.o_proj.weight", {d, c.n_heads * hd}, out_std);
    layer.mlp_norm = add(p + "post_attention_layernorm.weight", {d}, 0);
    layer.gate_up = add(p + "mlp.gate_up_proj.weight", {2 * c.ffn(), d}, c.init_std);
    layer.down = add(p + "mlp.down_proj.weight", {d, c.ffn()}, out_std);
    layers_.push_back(layer);
  }
  final_norm_ = add("model.norm.weight", {d}, 0);
  lm_head_ = add("lm_head.weight", {c.vocab_size, d}, c.init_std);
}

Parameter& LlamaModel::parameter(const std::string& name) {
  for (Parameter& p : params_) {
    if (p.name == name) return p;
  }
  throw Error(fmt::format("the model has no parameter '{}'", name));
}

void LlamaModel::zero_grads() {
  for (Parameter& p : params_) backend_.fill(p.grad, 0.0);
}

const Recipe& LlamaModel::recipe_for(std::int64_t layer) const {
  const bool bf16 = layer < config_.bf16_blocks_first || layer >= config_.n_layers - config_.bf16_blocks_last;
  return bf16 ? bf16_recipe_ : recipe_;
}

void LlamaModel::forward(const Tensor& tokens, std::int64_t batch, std::int64_t seq, std::uint32_t call, Activations& a) {
  const LlamaConfig& c = config_;
  if (batch < 1 || seq < 1 || seq > c.max_seq_len) {
    throw Error(fmt::format("forward: batch {} x sequence {} (the model's maximum sequence length is {})", batch, seq,
                            c.max_seq_len));
  }
  const std::int64_t n = batch * seq, d = c.d_model;
  tokens.expect("model input tokens", {n}, DType::i32);
  const DType act = backend_.activation_dtype();
  a.shape = AttentionShape{batch, seq, c.n_heads, c.n_kv_heads, c.head_dim(), c.rope_theta};
  a.blocks.assign(static_cast<std::size_t>(c.n_layers), {});

  Tensor x = backend_.empty({n, d}, act);
  backend_.embedding_forward(x, tokens, params_[embed_].value);
  for (std::int64_t l = 0; l < c.n_layers; ++l) {
    const Layer& L = layers_[static_cast<std::size_t>(l)];
    const Recipe& r = recipe_for(l);
    Activations::Block& b = a.blocks[static_cast<std::size_t>(l)];
    const auto random = [&](std::uint32_t which) {
      return LinearRandom{seed_, static_cast<std::uint32_t>(l) * kLinearsPerLayer + which, call};
    };
    b.x_in = x;
    b.rstd_attn = backend_.empty({n}, backend_.param_dtype());
    Tensor h = backend_.empty({n, d}, act);
    backend_.rmsnorm_forward(h, b.rstd_attn, b.x_in, params_[L.attn_norm].value, c.rms_norm_eps);
    b.qkv = backend_.empty({n, a.shape.qkv_width()}, act);
    linear_forward(backend_, r, h, params_[L.qkv].value, b.qkv, b.lin_qkv, random(0));
    Tensor att = backend_.empty({n, a.shape.q_width()}, act);
    backend_.attention_forward(att, b.attention, b.qkv, a.shape);
    Tensor o = backend_.empty({n, d}, act);
    linear_forward(backend_, r, att, params_[L.o].value, o, b.lin_o, random(1));
    b.x_mid = backend_.empty({n, d}, act);
    backend_.copy(b.x_mid, b.x_in);
    backend_.add_inplace(b.x_mid, o);

    b.rstd_mlp = backend_.empty({n}, backend_.param_dtype());
    Tensor h2 = backend_.empty({n, d}, act);
    backend_.rmsnorm_forward(h2, b.rstd_mlp, b.x_mid, params_[L.mlp_norm].value, c.rms_norm_eps);
    b.gate_up = backend_.empty({n, 2 * c.ffn()}, act);
    linear_forward(backend_, r, h2, params_[L.gate_up].value, b.gate_up, b.lin_gate_up, random(2));
    Tensor s = backend_.empty({n, c.ffn()}, act);
    backend_.swiglu_forward(s, b.gate_up);
    Tensor down = backend_.empty({n, d}, act);
    linear_forward(backend_, r, s, params_[L.down].value, down, b.lin_down, random(3));
    x = backend_.empty({n, d}, act);
    backend_.copy(x, b.x_mid);
    backend_.add_inplace(x, down);
  }
  a.x_final = x;
  a.rstd_final = backend_.empty({n}, backend_.param_dtype());
  a.normed_final = backend_.empty({n, d}, act);
  backend_.rmsnorm_forward(a.normed_final, a.rstd_final, a.x_final, params_[final_norm_].value, c.rms_norm_eps);
  a.logits = backend_.empty({n, c.vocab_size}, backend_.param_dtype());
  backend_.gemm(a.logits, a.normed_final, false, params_[lm_head_].value, false, false);
}

double LlamaModel::forward_backward(const Tensor& tokens, const Tensor& targets, std::int64_t batch, std::int64_t seq,
                                    double grad_scale, std::uint32_t call) {
  const LlamaConfig& c = config_;
  Activations a;
  forward(tokens, batch, seq, call, a);
  const std::int64_t n = batch * seq, d = c.d_model;
  const DType act = backend_.activation_dtype();

  // The loss gradient overwrites the logits buffer (dlogits may alias logits).
  const double loss = backend_.cross_entropy(a.logits, a.logits, targets, grad_scale);
  Tensor& dlogits = a.logits;
  Tensor dnormed = backend_.empty({n, d}, act);
  backend_.gemm(dnormed, dlogits, false, params_[lm_head_].value, true, false);
  backend_.gemm(params_[lm_head_].grad, dlogits, true, a.normed_final, true, true);
  Tensor dx = backend_.empty({n, d}, act);
  backend_.rmsnorm_backward(dx, params_[final_norm_].grad, dnormed, a.x_final, params_[final_norm_].value, a.rstd_final);

  last_linear_bytes_ = 0;
  for (std::int64_t l = c.n_layers - 1; l >= 0; --l) {
    const Layer& L = layers_[static_cast<std::size_t>(l)];
    const Recipe& r = recipe_for(l);
    Activations::Block& b = a.blocks[static_cast<std::size_t>(l)];
    const auto random = [&](std::uint32_t which) {
      return LinearRandom{seed_, static_cast<std::uint32_t>(l) * kLinearsPerLayer + which, call};
    };
    last_linear_bytes_ += b.lin_qkv.activation_bytes() + b.lin_o.activation_bytes() +
                          b.lin_gate_up.activation_bytes() + b.lin_down.activation_bytes();
    // MLP half: x_out = x_mid + down(swiglu(gate_up(norm(x_mid)))).
    Tensor ds = backend_.empty({n, c.ffn()}, act);
    linear_backward(backend_, r, dx, params_[L.down].value, b.lin_down, ds, params_[L.down].grad, random(3));
    Tensor dgate_up = backend_.empty({n, 2 * c.ffn()}, act);
    backend_.swiglu_backward(dgate_up, ds, b.gate_up);
    Tensor dh2 = backend_.empty({n, d}, act);
    linear_backward(backend_, r, dgate_up, params_[L.gate_up].value, b.lin_gate_up, dh2, params_[L.gate_up].grad,
                    random(2));
    Tensor dnorm = backend_.empty({n, d}, act);
    backend_.rmsnorm_backward(dnorm, params_[L.mlp_norm].grad, dh2, b.x_mid, params_[L.mlp_norm].value, b.rstd_mlp);
    backend_.add_inplace(dx, dnorm);  // dx is now d(x_mid)

    // Attention half: x_mid = x_in + o(attention(qkv(norm(x_in)))).
    Tensor datt = backend_.empty({n, a.shape.q_width()}, act);
    linear_backward(backend_, r, dx, params_[L.o].value, b.lin_o, datt, params_[L.o].grad, random(1));
    Tensor dqkv = backend_.empty({n, a.shape.qkv_width()}, act);
    backend_.attention_backward(dqkv, datt, b.qkv, b.attention, a.shape);
    Tensor dh = backend_.empty({n, d}, act);
    linear_backward(backend_, r, dqkv, params_[L.qkv].value, b.lin_qkv, dh, params_[L.qkv].grad, random(0));
    backend_.rmsnorm_backward(dnorm, params_[L.attn_norm].grad, dh, b.x_in, params_[L.attn_norm].value, b.rstd_attn);
    backend_.add_inplace(dx, dnorm);  // d(x_in)
  }
  backend_.embedding_backward(params_[embed_].grad, tokens, dx);
  backend_.raise_pending_errors();
  return loss;
}

double LlamaModel::forward_loss(const Tensor& tokens, const Tensor& targets, std::int64_t batch, std::int64_t seq) {
  Activations a;
  forward(tokens, batch, seq, 0, a);
  const double loss = backend_.cross_entropy(a.logits, a.logits, targets, 0.0);
  backend_.raise_pending_errors();
  return loss;
}

Tensor LlamaModel::forward_logits(const Tensor& tokens, std::int64_t batch, std::int64_t seq) {
  Activations a;
  forward(tokens, batch, seq, 0, a);
  backend_.raise_pending_errors();  // sampling must not go on from non-finite activations either
  return a.logits;
}

}  // namespace quartet

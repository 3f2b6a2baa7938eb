// The Llama model (architecture.md): token embedding; N blocks of [RMSNorm -> causal
// self-attention with RoPE and optional grouped-query heads -> residual -> RMSNorm -> SwiGLU
// MLP -> residual]; final RMSNorm; untied lm_head; no biases. Inside a block, Q|K|V and
// gate|up run as fused linear layers; parameter names follow Hugging Face LlamaForCausalLM
// (the fused weights are split on export). Forward and backward are written by hand, once,
// against the Backend interface.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "quartet/backend/backend.h"
#include "quartet/nn/linear.h"
#include "quartet/nn/recipe.h"

namespace quartet {

struct LlamaConfig {
  std::string size = "custom";  // the preset it came from
  std::int64_t vocab_size = 257;
  std::int64_t d_model = 128;
  std::int64_t n_layers = 2;
  std::int64_t n_heads = 4;
  std::int64_t n_kv_heads = 4;
  std::int64_t ffn_hidden = 0;  // 0: round_up(8 d / 3, 256)
  std::int64_t max_seq_len = 256;
  double rope_theta = 10000.0;
  double rms_norm_eps = 1e-5;
  double init_std = 0.02;
  // NVIDIA's published recipe keeps some blocks in BF16: the first and last this many.
  std::int64_t bf16_blocks_first = 0;
  std::int64_t bf16_blocks_last = 0;

  std::int64_t head_dim() const { return d_model / n_heads; }
  std::int64_t ffn() const;
  // Parameters excluding the embedding and lm_head (how the paper counts model size).
  std::int64_t block_parameters() const;
  std::int64_t total_parameters() const;
  void validate() const;  // throws Error naming the field
};

// Named sizes: "tiny" (tests), the paper's "30m", "50m", "100m", "200m", "124m" (GPT-2 small
// class) and "1b" (d 2048, 18 layers, seq 2048: the ~1B model of the GPU benchmarks). Throws
// Error for an unknown name.
LlamaConfig llama_preset(const std::string& size, std::int64_t vocab_size);
const std::vector<std::string>& llama_preset_names();

// Checks that every linear layer's GEMMs fit the recipe's rotations (each RHT size must divide
// its GEMM's reduction dimension: K forward, N for dgrad, the micro-batch's tokens for
// wgrad). Throws Error naming the layer and the dimension.
void check_recipe_fits(const LlamaConfig& config, const Recipe& recipe, std::int64_t tokens_per_micro_batch);

struct Parameter {
  std::string name;  // Hugging Face name (fused qkv_proj / gate_up_proj inside blocks)
  Tensor value;      // FP32 master weight (a view into FlatParameters::values)
  Tensor grad;       // its gradient (a view into FlatParameters::grads)
  Tensor value_bf16; // the weight rounded to BF16, what BF16 GEMMs read (a view)
  bool decay = false;  // weight decay applies to matrices only
};

// All parameters live in three flat buffers, so that the optimizer updates them with one
// kernel and the gradients are zeroed with one fill. Each parameter is a segment; segments
// start at multiples of kSegmentAlignment elements (the gaps stay zero).
struct FlatParameters {
  static constexpr std::int64_t kSegmentAlignment = 64;
  Tensor values;       // param_dtype(), [total]
  Tensor grads;        // param_dtype(), [total]
  Tensor values_bf16;  // bf16, [total]
  std::vector<ParameterSegment> segments;  // in parameters() order
};

// The keys and values of the positions one sequence has seen, per layer, for
// LlamaModel::forward_cached (sampling: a new token's forward pass reads them instead of
// recomputing the prefix).
struct KvCache {
  std::vector<Tensor> keys, values;  // per layer: [capacity, kv_heads * head_dim], Backend::kv_cache_dtype()
  std::int64_t capacity = 0;         // positions it holds: the model's max_seq_len
  std::int64_t length = 0;           // positions filled
};

// Told during LlamaModel::forward_backward when the gradients of a group of parameters are
// complete for the micro-batch (no later kernel of the pass writes them; on a GPU: every kernel
// that writes them is queued): for a data-parallel run to start reducing them while the rest
// of the backward pass runs. The groups are LlamaModel::backward_groups(), in that order.
class GradientsReady {
 public:
  virtual ~GradientsReady() = default;
  virtual void ready(std::size_t group) = 0;
};

class LlamaModel {
 public:
  // Allocates and initialises the parameters from the seed (normal(0, init_std); the output
  // projections of each block scaled by 1/sqrt(2 n_layers); norms 1).
  // flat_multiple: the flat buffers' size is rounded up to a multiple of it (zero padding after
  // the last segment), so that a sharded optimizer cuts them into equal shards.
  LlamaModel(Backend& backend, LlamaConfig config, Recipe recipe, std::uint64_t seed, std::int64_t flat_multiple = 1);

  const LlamaConfig& config() const { return config_; }
  const Recipe& recipe() const { return recipe_; }
  // Access that may change the weights: the BF16 copies (what BF16 GEMMs read) are refreshed
  // from the values before the next forward pass. A reference kept across a forward pass and
  // written through afterwards must be followed by weights_changed().
  std::vector<Parameter>& parameters();
  Parameter& parameter(const std::string& name);
  const std::vector<Parameter>& parameters() const { return params_; }
  FlatParameters& flat();
  void weights_changed() { bf16_fresh_ = false; }
  // The optimizer wrote values_bf16 together with the values (Backend::adamw_step).
  void bf16_weights_written() { bf16_fresh_ = true; }
  void zero_grads();

  // One micro-batch: tokens and targets are [batch * seq] i32 (target -1: no loss there).
  // Accumulates parameter gradients of (summed loss) * grad_scale and adds the summed loss to
  // loss_sum (f64 [1], on the device: nothing is read back). `call` numbers the micro-batch: it
  // selects fresh random bits for stochastic quantizers. Errors a GPU records on the device
  // (non-finite quantizer inputs, bad tokens) are left for Backend::raise_pending_errors().
  // A probe, if given, sees every quantized GEMM of the linear layers in the blocks, named
  // "layers.<block>.qkv_proj", "o_proj", "gate_up_proj", "down_proj" (the LM head runs in BF16);
  // the pass computes the same bits with it as without.
  // `ready`, if given, is told as each of backward_groups() is complete.
  void forward_backward(const Tensor& tokens, const Tensor& targets, std::int64_t batch, std::int64_t seq,
                        double grad_scale, std::uint32_t call, Tensor& loss_sum, LinearProbe* probe = nullptr,
                        GradientsReady* ready = nullptr);
  // The parameters (parameters() indices) whose gradients forward_backward completes together,
  // in the order it completes them: the LM head with the final norm, then each block from the
  // last to the first, then the embedding. In the flat buffers each group lies below the one
  // before it (the backward pass walks the buffer from its end to its start).
  const std::vector<std::vector<std::size_t>>& backward_groups() const { return backward_groups_; }
  // Whether any linear layer runs a quantized GEMM (not with bf16, nor when --bf16-blocks
  // covers every block): what a LinearProbe could see.
  bool quantizes_any_linear() const;
  // The same, returning the summed loss and raising pending errors (tests, tools).
  double forward_backward(const Tensor& tokens, const Tensor& targets, std::int64_t batch, std::int64_t seq,
                          double grad_scale, std::uint32_t call);
  // Summed loss without gradients (evaluation), added to loss_sum.
  void forward_loss(const Tensor& tokens, const Tensor& targets, std::int64_t batch, std::int64_t seq, Tensor& loss_sum);
  double forward_loss(const Tensor& tokens, const Tensor& targets, std::int64_t batch, std::int64_t seq);
  // Logits [batch * seq, padded_vocab()] (activation dtype: BF16 on the GPU) of a forward pass,
  // for sampling: the first vocab_size columns of each row are the vocabulary's.
  Tensor forward_logits(const Tensor& tokens, std::int64_t batch, std::int64_t seq);
  // An empty key/value cache for one sequence of up to max_seq_len positions.
  KvCache make_kv_cache();
  // The forward pass of `seq` new tokens ([seq] i32) of one sequence at positions
  // cache.length .. cache.length + seq - 1, reading the earlier positions' keys and values from
  // the cache and appending the new ones (cache.length grows by seq): the logits [1,
  // padded_vocab()] of the last new position, those forward_logits gives that position over
  // the whole sequence. Throws Error when the positions would pass the cache's capacity.
  Tensor forward_cached(const Tensor& tokens, std::int64_t seq, KvCache& cache);
  // Why forward_cached would give other logits than forward_logits for this model, or "" when
  // it gives the same: a layer whose recipe quantizes activations with scales shared across
  // positions (NVFP4's per-tensor scale) sees other scales one position at a time.
  std::string kv_cache_mismatch() const;
  // The vocabulary rounded up to the backend's preferred GEMM multiple: the LM head and the
  // logits have this many rows / columns, the ones beyond the vocabulary zero.
  std::int64_t padded_vocab() const { return padded_vocab_; }

  // Bytes the linear layers kept for backward in the last forward_backward.
  std::size_t last_linear_activation_bytes() const { return last_linear_bytes_; }

 private:
  // Indices into params_ of one block's parameters.
  struct Layer {
    std::size_t attn_norm, qkv, o, mlp_norm, gate_up, down;
  };
  std::vector<std::vector<std::size_t>> backward_groups_;
  struct Activations;

  void forward(const Tensor& tokens, std::int64_t batch, std::int64_t seq, std::uint32_t call, Activations& a,
               LinearProbe* probe = nullptr);
  const Recipe& recipe_for(std::int64_t layer) const;
  void refresh_bf16_weights();
  const Tensor& gemm_weight(std::size_t i) const;
  Tensor padded_head(const Tensor& bf16_buffer, const Tensor& exact_buffer) const;

  Backend& backend_;
  LlamaConfig config_;
  Recipe recipe_;
  Recipe bf16_recipe_;
  std::uint64_t seed_;
  std::vector<Parameter> params_;
  FlatParameters flat_;
  bool bf16_fresh_ = false;
  std::vector<Layer> layers_;
  std::size_t embed_ = 0, final_norm_ = 0, lm_head_ = 0;  // indices into params_
  std::int64_t padded_vocab_ = 0;
  std::size_t last_linear_bytes_ = 0;
};

}  // namespace quartet
